"""Log probabilities of generated tokens, from one row of logits (numpy only, no llama.cpp).

Computed only for requests that ask (`CompletionRequest.logprobs`), after the token was sampled,
from the logits the model produced for that sequence's position in the batch. As Ollama (through
llama-server's `n_probs` without `post_sampling_probs`), the values describe the model's raw
distribution: a log-softmax over the whole vocabulary, before temperature, penalties, top-k/p
or a grammar shaped the sampler's choice. So with greedy decoding and no penalties the sampled
token is the top-1 alternative.

An entry is Ollama's `api.Logprob` shape: `{"token", "logprob", "bytes", "top_logprobs"}`, where
`token` is the token's text (invalid UTF-8 of a partial character replaced, as Go's JSON encoder
does), `bytes` its raw bytes (omitted when empty), `top_logprobs` the `top` most likely tokens,
most likely first (omitted when `top` is 0).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

MAX_TOP = 20  # Ollama's bound on top_logprobs


def log_softmax(logits: np.ndarray) -> tuple[float, float]:
    """(max logit, log of the sum of exp(logit - max)) — so logprob(t) = logits[t] - max - log_sum."""
    peak = float(logits.max())
    log_sum = float(np.log(np.exp((logits - peak).astype(np.float64)).sum()))
    return peak, log_sum


def top_tokens(logits: np.ndarray, k: int) -> list[int]:
    """The ids of the k largest logits, largest first (ties: lower id first)."""
    n = logits.shape[0]
    k = min(k, n)
    if k <= 0:
        return []
    if k < n:
        part = np.argpartition(-logits, k - 1)[:k]
    else:
        part = np.arange(n)
    order = np.lexsort((part, -logits[part]))
    return [int(i) for i in part[order]]


def entry(logprob: float, piece: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"token": piece.decode("utf-8", "replace"), "logprob": logprob}
    if piece:
        out["bytes"] = list(piece)
    return out


def token_logprob(logits: np.ndarray, token: int, top: int, piece: Callable[[int], bytes]) -> dict[str, Any]:
    """The entry for `token` sampled from `logits` (one row, float32), with `top` alternatives."""
    peak, log_sum = log_softmax(logits)

    def lp(t: int) -> float:
        return (float(logits[t]) - peak) - log_sum  # both terms ≤ 0 (log_sum ≥ 0: exp(0) is summed)

    out = entry(lp(token), piece(token))
    if top > 0:
        out["top_logprobs"] = [entry(lp(t), piece(t)) for t in top_tokens(logits, top)]
    return out
