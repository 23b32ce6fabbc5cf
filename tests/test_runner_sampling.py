"""The sampler's own penalties and greedy pick against llama.cpp's samplers, on the same logits.

`server.runner.sampling.Penalties` and the greedy argmax replace two of llama.cpp's samplers for
speed (docs/benchmarks.md); these tests run llama.cpp's own samplers on the same rows and require
the same numbers and the same tokens.
"""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest

from server.runner.sampling import Penalties, Sampler
from server.runner.types import SamplingOptions

N_VOCAB = 4096


def llama_penalized(row: np.ndarray, opts: SamplingOptions, last_n: int, history: list[int]) -> np.ndarray:
    """llama.cpp's penalties sampler, primed with `history`, applied to a candidate array of `row`."""
    smpl = L.llama_sampler_init_penalties(
        N_VOCAB, last_n, opts.repeat_penalty, opts.frequency_penalty, opts.presence_penalty
    )
    try:
        for tok in history:
            L.llama_sampler_accept(smpl, tok)
        data = (L.llama_token_data * N_VOCAB)()
        for i, v in enumerate(row.tolist()):
            data[i].id, data[i].logit, data[i].p = i, v, 0.0
        arr = L.llama_token_data_array(data=data, size=N_VOCAB, selected=-1, sorted=False)
        L.llama_sampler_apply(smpl, ctypes.byref(arr))
        return np.array([data[i].logit for i in range(N_VOCAB)], dtype=np.float32)
    finally:
        L.llama_sampler_free(smpl)


CASES = [
    # (repeat, frequency, presence, last_n, history length)
    (1.1, 0.0, 0.0, 64, 40),  # Ollama's defaults, history shorter than the window
    (1.3, 0.5, 0.25, 16, 200),  # every penalty, a window that drops most of the history
    (0.8, -0.5, 1.5, 64, 300),  # a repeat penalty below 1 rewards; negative frequency
    (1.0, 0.7, 0.0, 8, 8),  # frequency alone, a window exactly full
]


@pytest.mark.parametrize("repeat,freq,present,last_n,n_hist", CASES)
def test_penalties_match_llama_cpp(repeat, freq, present, last_n, n_hist):
    rng = np.random.default_rng(n_hist)
    row = (rng.standard_normal(N_VOCAB) * 4).astype(np.float32)
    row[:10] = 0.0  # the `logit <= 0` branch at exactly zero
    history = rng.integers(0, 50, size=n_hist).tolist()  # few distinct tokens: counts above 1
    opts = SamplingOptions(repeat_penalty=repeat, frequency_penalty=freq, presence_penalty=present,
                           repeat_last_n=last_n)
    want = llama_penalized(row, opts, last_n, history)

    mine = row.copy()
    pen = Penalties(opts, last_n, history)
    saved = pen.apply(mine)
    np.testing.assert_allclose(mine, want, rtol=0, atol=1e-6)
    Penalties.restore(mine, saved)
    assert np.array_equal(mine, row)  # the raw logits are back (log probabilities read them)


def test_penalties_follow_accepted_tokens_like_llama_cpp():
    """Tokens accepted after priming slide the window exactly as llama.cpp's ring buffer does."""
    rng = np.random.default_rng(7)
    row = rng.standard_normal(N_VOCAB).astype(np.float32)
    opts = SamplingOptions(repeat_penalty=1.2, frequency_penalty=0.3, presence_penalty=0.1, repeat_last_n=5)
    prompt, generated = [1, 2, 3, 2, 9, 9, 4], [2, 7, 7, 1, 3, 3, 3]
    pen = Penalties(opts, 5, prompt)
    for tok in generated:
        pen.accept(tok)
    mine = row.copy()
    pen.apply(mine)
    np.testing.assert_allclose(mine, llama_penalized(row, opts, 5, prompt + generated), rtol=0, atol=1e-6)


def test_no_penalties_when_they_are_neutral():
    assert Sampler(N_VOCAB, SamplingOptions(repeat_penalty=1.0), [1, 2, 3]).penalties is None
    assert Sampler(N_VOCAB, SamplingOptions(repeat_last_n=0), [1, 2, 3]).penalties is None
    assert Sampler(N_VOCAB, SamplingOptions(), [1, 2, 3]).penalties is not None
    whole = Sampler(N_VOCAB, SamplingOptions(repeat_last_n=-1), list(range(100)))
    assert whole.penalties is not None and len(whole.penalties.recent) == 100  # -1: the whole context


def test_greedy_argmax_breaks_ties_as_llama_cpp():
    """llama.cpp's greedy sampler keeps the first of equal maxima; so does numpy's argmax."""
    row = np.zeros(N_VOCAB, dtype=np.float32)
    row[[17, 300, 4000]] = 5.0
    data = (L.llama_token_data * N_VOCAB)()
    for i, v in enumerate(row.tolist()):
        data[i].id, data[i].logit, data[i].p = i, v, 0.0
    arr = L.llama_token_data_array(data=data, size=N_VOCAB, selected=-1, sorted=False)
    greedy = L.llama_sampler_init_greedy()
    L.llama_sampler_apply(greedy, ctypes.byref(arr))
    L.llama_sampler_free(greedy)
    assert data[arr.selected].id == int(row.argmax()) == 17
