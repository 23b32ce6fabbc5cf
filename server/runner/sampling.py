"""Per-request sampler chains and format grammars (runner process side; uses llama.cpp).

Chain order follows llama.cpp's common sampler: grammar, penalties, top_k, typical, top_p, min_p,
temperature, then dist(seed) — or greedy when temperature is 0. The chain lives in C; sampling a
slot is one `llama_sampler_sample` call on its output row.
"""

from __future__ import annotations

import json
from typing import Any

import llama_cpp as L

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


def build_chain(
    vocab: Any, n_vocab: int, opts: SamplingOptions, grammar: str | None, history: list[int]
) -> Any:
    """A new sampler chain for one request. `history` (the prompt's tail) primes the penalties."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
    if grammar:
        g = L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not g:
            L.llama_sampler_free(chain)
            raise InvalidRequest("invalid grammar: llama.cpp could not parse it")
        add(chain, g)
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
