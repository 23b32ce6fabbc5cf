"""Per-request samplers and format grammars (runner process side; uses llama.cpp).

Order follows llama.cpp's common sampler: penalties, top_k, typical, top_p, min_p, temperature,
then dist(seed) — or greedy when temperature is 0. Two steps of it are done here rather than in
llama.cpp's C chain, because with a 262k vocabulary (Gemma) their generic form costs more per slot
than a batch step can spare (measured: bench/overhead.py; docs/benchmarks.md):
- penalties touch only the ≤ repeat_last_n tokens seen recently, so they are applied to those
  entries of the output row (`Penalties`), not by a pass over every candidate as llama.cpp's
  penalties sampler does (≈ 0.8 ms per slot and step);
- greedy is an argmax over the row (≈ 0.02 ms), not a candidate array of the whole vocabulary
  built for llama.cpp's greedy sampler (≈ 0.3 ms).
The rest of the chain stays in C: sampling an unconstrained slot is one `llama_sampler_sample`
call on its output row. The arithmetic is llama.cpp's, in float32.

A grammar is not put in front of the chain: checking every one of a 262k vocabulary against the
grammar each step costs more than the decode. As llama.cpp's common sampler does, the token is
sampled without the grammar, checked against it alone, and only when rejected resampled with the
grammar applied to all candidates (ConstrainedSampler).
"""

from __future__ import annotations

import collections
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


def logits_row(ctx: Any, i: int, n_vocab: int) -> np.ndarray:
    """Output row `i` of the last decode, as a writable view of llama.cpp's logits buffer."""
    return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))


class Penalties:
    """llama.cpp's penalties sampler (repeat, frequency, presence over the last `last_n` tokens),
    applied in place to the penalized entries of a logits row and undone after sampling."""

    def __init__(self, opts: SamplingOptions, last_n: int, history: list[int]) -> None:
        self.repeat = np.float32(opts.repeat_penalty)
        self.freq = np.float32(opts.frequency_penalty)
        self.present = np.float32(opts.presence_penalty)
        self.recent: collections.deque[int] = collections.deque(maxlen=last_n)
        self.counts: collections.Counter[int] = collections.Counter()
        for tok in history[-last_n:]:
            self.accept(tok)

    def accept(self, tok: int) -> None:
        recent = self.recent
        if len(recent) == recent.maxlen:
            old = recent[0]
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
        recent.append(tok)
        self.counts[tok] += 1

    def apply(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Penalize `row` in place; returns what `restore` needs to put the raw logits back."""
        if not self.counts:
            return None
        ids = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
        raw = row[ids]
        counts = np.fromiter((self.counts[int(i)] for i in ids), dtype=np.float32, count=len(ids))
        out = np.where(raw <= 0, raw * self.repeat, raw / self.repeat)
        out -= counts * self.freq + self.present
        row[ids] = out
        return ids, raw

    @staticmethod
    def restore(row: np.ndarray, saved: tuple[np.ndarray, np.ndarray] | None) -> None:
        if saved is not None:
            row[saved[0]] = saved[1]


def _chain(opts: SamplingOptions) -> Any:
    """The C part of the chain (everything after the penalties)."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
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


class Sampler:
    """One request's sampler. `history` (the prompt's tail) primes the penalties. A grammar is
    kept apart from it (see ConstrainedSampler)."""

    def __init__(self, n_vocab: int, opts: SamplingOptions, history: list[int]) -> None:
        self.n_vocab = n_vocab
        self.greedy = opts.temperature <= 0
        penalize = opts.repeat_last_n != 0 and (
            opts.repeat_penalty != 1.0 or opts.presence_penalty != 0.0 or opts.frequency_penalty != 0.0
        )
        last_n = opts.repeat_last_n if opts.repeat_last_n > 0 else n_vocab  # -1 = the whole context
        self.penalties = Penalties(opts, min(last_n, 1 << 20), history) if penalize else None
        self.chain = _chain(opts)

    def sample(self, ctx: Any, i: int, grammar: Any = None, constrained: "ConstrainedSampler | None" = None) -> int:
        """The next token from output row `i` of the last decode. The row is left as the model
        produced it (log probabilities are computed from it afterwards)."""
        row = logits_row(ctx, i, self.n_vocab)
        saved = self.penalties.apply(row) if self.penalties else None
        try:
            if grammar is not None:
                assert constrained is not None
                tok = constrained.sample(self.chain, grammar, ctx, i)
            elif self.greedy:
                tok = int(row.argmax())  # llama.cpp's greedy: the first of the highest logits
            else:
                tok = L.llama_sampler_sample(self.chain, ctx, i)
        finally:
            Penalties.restore(row, saved)
        if self.penalties:
            self.penalties.accept(tok)
        return tok

    def free(self) -> None:
        if self.chain:
            L.llama_sampler_free(self.chain)
            self.chain = None


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
        logits = logits_row(ctx, i, self.n_vocab)
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
