"""Flash attention's CPU kernels agree with plain attention on the shapes the runner sends.

ggml picks its flash-attention kernel by the number of query rows of a sequence, by the thread
count and by whether several sequences share a batch; scripts/llama-patches changes that choice
(the tiled kernel from 8 rows, split in whole tiles). Every branch is run here with flash
attention on and off on the same tokens after the same cached history, and every output row must
agree (to 1 % of the largest logit: the row-wise kernel accumulates in f16) and pick the same
tokens: decoding (1 row), a row-wise remainder (7), tiles cut short (8, 20, 63), a full tile (64),
a tile and a remainder (100), with 1, 2 and 8 threads (8 threads: fewer tiles than threads), and
two sequences in one batch.
"""

from __future__ import annotations

import llama_cpp as L
import numpy as np
import pytest

from tests.support.tiny_gguf import N_CTX


@pytest.fixture(scope="module")
def model(tiny_gguf):
    L.llama_backend_init()
    params = L.llama_model_default_params()
    m = L.llama_model_load_from_file(str(tiny_gguf).encode(), params)
    assert m
    yield m
    L.llama_model_free(m)


def context(model, flash: bool, threads: int, n_seq: int = 1):
    cp = L.llama_context_default_params()
    cp.n_ctx = N_CTX
    cp.n_batch = cp.n_ubatch = 512
    cp.n_seq_max = n_seq
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = False
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = L.llama_init_from_model(model, cp)
    assert ctx
    return ctx


def token(i: int) -> int:
    return 3 + (i * 37) % 90  # inside the tiny vocabulary, not a control token


def evaluate(ctx, batch, seqs: dict[int, tuple[int, int]], all_logits: bool) -> None:
    """Decode positions start..start+n-1 of each sequence in one batch."""
    n = 0
    for sid, (start, count) in seqs.items():
        for j in range(count):
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token(start + j + 11 * sid), start + j, 1
            batch.seq_id[n][0] = sid
            batch.logits[n] = all_logits
            n += 1
    batch.n_tokens = n
    assert L.llama_decode(ctx, batch) == 0


def rows(model, flash: bool, threads: int, cached: int, new: int, n_seq: int) -> np.ndarray:
    ctx = context(model, flash, threads, n_seq)
    batch = L.llama_batch_init(512, 0, 1)
    try:
        for start in range(0, cached, 256):
            evaluate(ctx, batch, {s: (start, min(256, cached - start)) for s in range(n_seq)}, False)
        evaluate(ctx, batch, {s: (cached, new) for s in range(n_seq)}, True)
        n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
        return np.array([np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
                         for i in range(new * n_seq)])
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


@pytest.mark.parametrize("new", [1, 7, 8, 20, 63, 64, 100])
@pytest.mark.parametrize("cached", [0, 300])
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_flash_attention_matches_plain_attention(model, cached, new, threads):
    on = rows(model, True, threads, cached, new, 1)
    off = rows(model, False, threads, cached, new, 1)
    scale = np.abs(off).max()
    assert np.abs(on - off).max() <= 1e-2 * scale
    assert (on.argmax(axis=1) == off.argmax(axis=1)).mean() >= 0.95


@pytest.mark.parametrize("new", [1, 20, 70])
def test_flash_attention_matches_plain_attention_two_sequences_in_one_batch(model, new):
    on = rows(model, True, 2, 200, new, 2)
    off = rows(model, False, 2, 200, new, 2)
    assert np.abs(on - off).max() <= 1e-2 * np.abs(off).max()
