"""server.runner.logprobs: log-softmax and top alternatives of one row of logits (pure, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.runner.logprobs import log_softmax, token_logprob, top_tokens

PIECES = {0: b"a", 1: b"b", 2: b"", 3: b"\xe2\x82", 4: b" the"}


def piece(t: int) -> bytes:
    return PIECES.get(t, b"?")


def reference(logits: list[float], t: int) -> float:
    """log(exp(x_t) / sum(exp(x))) in exact decimal arithmetic (no overflow, no shortcut)."""
    from decimal import Decimal, getcontext

    getcontext().prec = 50
    total = sum(Decimal(float(v)).exp() for v in logits)
    return float(Decimal(float(logits[t])) - total.ln())


@pytest.mark.parametrize("logits", [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0, 2.0, 3.0, 4.0, 5.0],
    [1000.0, 999.0, 998.0, 0.0, -1000.0],  # large values: no overflow
    [-1e4, -1e4 + 1, -1e4 + 2, -1e4 + 3, -1e4 + 4],
    [3.5, -2.25, 0.5, 7.0, 7.0],
])
def test_logprobs_match_a_reference_log_softmax(logits):
    row = np.array(logits, dtype=np.float32)
    peak, log_sum = log_softmax(row)
    assert peak == max(logits) and log_sum >= 0
    for t in range(len(logits)):
        e = token_logprob(row, t, 0, piece)
        assert e["logprob"] == pytest.approx(reference(logits, t), abs=1e-4) and e["logprob"] <= 0
    assert math.fsum(math.exp(token_logprob(row, t, 0, piece)["logprob"]) for t in range(len(logits))) \
        == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("logits, k, ids", [
    ([2.0, 5.0, 1.0, 4.0, 3.0], 5, [1, 3, 4, 0, 2]),
    ([2.0, 5.0, 1.0, 4.0, 3.0], 2, [1, 3]),
    ([2.0, 5.0, 1.0, 4.0, 3.0], 9, [1, 3, 4, 0, 2]),  # more than the vocabulary: all of it
    ([1.0, 1.0, 1.0, 0.0, 1.0], 3, [0, 1, 2]),  # ties: lower id first
    ([1.0, 1.0, 1.0, 0.0, 1.0], 0, []),
])
def test_top_tokens_are_the_largest_logits_largest_first(logits, k, ids):
    assert top_tokens(np.array(logits, dtype=np.float32), k) == ids


def test_entry_shape_is_ollamas_logprob():
    row = np.array([0.0, 1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    e = token_logprob(row, 3, 2, piece)
    assert list(e) == ["token", "logprob", "bytes", "top_logprobs"]
    assert e["token"] == "\ufffd" and e["bytes"] == [0xE2, 0x82]  # half a character: text replaced, bytes kept
    assert [(a["token"], a.get("bytes")) for a in e["top_logprobs"]] == [(" the", list(b" the")), ("\ufffd", [0xE2, 0x82])]
    assert e["top_logprobs"][1]["logprob"] == e["logprob"]
    assert token_logprob(row, 2, 0, piece) == {"token": "", "logprob": pytest.approx(reference(list(row), 2))}
