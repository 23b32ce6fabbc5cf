"""Writes a LoRA adapter GGUF for the tiny llama model (tests/support/tiny_gguf.py) with `gguf`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gguf import GGUFWriter

from tests.support.tiny_gguf import N_EMBD, N_LAYER


def write_tiny_lora(path: str | Path, *, scale_b: float = 0.5, rank: int = 4, seed: int = 1) -> Path:
    """Low-rank deltas on every attn_q; scale_b=0 gives an adapter that changes nothing."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for i in range(N_LAYER):
        # ggml order: lora_a is (in → rank), lora_b is (rank → out)
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a", (rng.standard_normal((rank, N_EMBD)) * 0.5).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b", (rng.standard_normal((N_EMBD, rank)) * scale_b).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
