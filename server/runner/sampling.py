"""Per-request sampler chains and format grammars (runner process side; uses llama.cpp).

Chain order follows llama.cpp's common sampler: penalties, top_k, typical, top_p, min_p,
temperature, then dist(seed) — or greedy when temperature is 0. The chain lives in C; sampling an
unconstrained slot is one `llama_sampler_sample` call on its output row.

A grammar is not put in front of the chain: checking every one of a 262k vocabulary against the
grammar each step costs more than the decode. As llama.cpp's common sampler does, the token is
sampled without the grammar, checked against it alone, and only when rejected resampled with the
grammar applied to all candidates (ConstrainedSampler).
"""

from __future__ import annotations

import ctypes
import json
import math
from typing import Any

import llama_cpp as L
import numpy as np

from server.runner.errors import InvalidRequest
from server.runner.types import SamplingOptions

_JSON_GBNF: str | None = None


def format_grammar(fmt: str | dict | None) -> str | None:
    """GBNF for Ollama's `format`: "json" → any JSON value as an object, a schema → its grammar."""
    from llama_cpp import llama_grammar

    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return llama_grammar.JSON_GBNF
    schema: Any = fmt
    if isinstance(fmt, str):
        try:
            schema = json.loads(fmt)
        except ValueError as e:
            raise InvalidRequest(f"invalid JSON schema in format: {e}") from None
    if not isinstance(schema, dict):
        raise InvalidRequest("invalid format: must be \"json\" or a JSON schema object")
    try:
        return llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except Exception as e:  # the converter raises assorted errors for unsupported schemas
        raise InvalidRequest(f"invalid JSON schema in format: {e}") from None


def build_grammar(vocab: Any, grammar: str) -> Any:
    g = L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not g:
        raise InvalidRequest("invalid grammar: llama.cpp could not parse it")
    return g


def build_chain(vocab: Any, n_vocab: int, opts: SamplingOptions, history: list[int]) -> Any:
    """A new sampler chain for one request. `history` (the prompt's tail) primes the penalties.
    A grammar is kept out of the chain (see ConstrainedSampler)."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
    penalize = opts.repeat_last_n != 0 and (
        opts.repeat_penalty != 1.0 or opts.presence_penalty != 0.0 or opts.frequency_penalty != 0.0
    )
    if penalize:
        last_n = n_vocab if opts.repeat_last_n < 0 else opts.repeat_last_n  # -1 = whole context
        last_n = min(last_n, 1 << 20)
        p = L.llama_sampler_init_penalties(
            n_vocab, last_n, opts.repeat_penalty, opts.frequency_penalty, opts.presence_penalty
        )
        for tok in history[-last_n:]:
            L.llama_sampler_accept(p, tok)
        add(chain, p)
    if opts.temperature <= 0:
        add(chain, L.llama_sampler_init_greedy())
        return chain
    if opts.top_k > 0:
        add(chain, L.llama_sampler_init_top_k(opts.top_k))
    if 0 < opts.typical_p < 1:
        add(chain, L.llama_sampler_init_typical(opts.typical_p, 1))
    if 0 < opts.top_p < 1:
        add(chain, L.llama_sampler_init_top_p(opts.top_p, 1))
    if opts.min_p > 0:
        add(chain, L.llama_sampler_init_min_p(opts.min_p, 1))
    add(chain, L.llama_sampler_init_temp(opts.temperature))
    seed = L.LLAMA_DEFAULT_SEED if opts.seed < 0 else opts.seed & 0xFFFFFFFF
    add(chain, L.llama_sampler_init_dist(seed))
    return chain


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(L.llama_token_data)


class ConstrainedSampler:
    """Samples with a chain and a grammar kept apart (one per engine; buffers are reused)."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.cand = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.one = (L.llama_token_data * 1)()
        self.one_arr = L.llama_token_data_array(data=self.one, size=1, selected=-1, sorted=False)
        self.arr = L.llama_token_data_array(
            data=self.cand.ctypes.data_as(L.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
        )

    def _load(self, ctx: Any, i: int) -> None:
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,))
        self.cand["id"] = self.ids
        self.cand["logit"] = logits
        self.cand["p"] = 0.0
        self.arr.data = self.cand.ctypes.data_as(L.llama_token_data_p)
        self.arr.size = self.n_vocab
        self.arr.selected = -1
        self.arr.sorted = False

    def sample(self, chain: Any, grammar: Any, ctx: Any, i: int) -> int:
        arr_p = ctypes.byref(self.arr)
        self._load(ctx, i)
        L.llama_sampler_apply(chain, arr_p)
        tok = int(self.arr.data[self.arr.selected].id)
        self.one[0].id, self.one[0].logit, self.one[0].p = tok, 1.0, 0.0
        self.one_arr.size, self.one_arr.selected, self.one_arr.sorted = 1, -1, False
        L.llama_sampler_apply(grammar, ctypes.byref(self.one_arr))
        if math.isinf(self.one[0].logit) and self.one[0].logit < 0:  # rejected: grammar first
            self._load(ctx, i)
            L.llama_sampler_apply(grammar, arr_p)
            L.llama_sampler_apply(chain, arr_p)
            tok = int(self.arr.data[self.arr.selected].id)
        L.llama_sampler_accept(grammar, tok)
        L.llama_sampler_accept(chain, tok)
        return tok
