"""The ceiling: raw batched decode through llama-cpp-python's low-level API, no server, no runner.

B sequences are prefilled with a 32-token prompt each (one batch), then S steps each decode one
token per sequence in one `llama_decode` and sample each sequence greedily from its output row.

    python bench/raw_batched.py --model PATH [--batches 1,2,4,8] [--steps 64] [--threads 2]

Prints one JSON object per B: {"B", "tok_s", "ms_step"} (decode only, prefill excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_quiet = None


def measure(model_path: str, batches: list[int], steps: int, threads: int, repeats: int) -> list[dict]:
    import llama_cpp as L

    global _quiet
    _quiet = L.llama_log_callback(lambda *a: None)  # kept referenced: C calls it later
    L.llama_log_set(_quiet, None)
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(model_path.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    nmax = max(batches)
    cp = L.llama_context_default_params()
    cp.n_ctx = 512 * nmax
    cp.n_seq_max = nmax
    cp.n_batch = 512
    cp.n_ubatch = 512
    cp.n_threads = cp.n_threads_batch = threads
    cp.swa_full = True
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(512, 0, 1)
    greedy = L.llama_sampler_init_greedy()
    prompt = [L.llama_vocab_bos(vocab)] + [1000 + i for i in range(31)]
    out = []
    for B in batches:
        best = None
        for _ in range(repeats):
            L.llama_memory_clear(mem, True)
            n = 0
            for s in range(B):
                for j, t in enumerate(prompt):
                    batch.token[n], batch.pos[n], batch.seq_id[n][0], batch.n_seq_id[n] = t, j, s, 1
                    batch.logits[n] = j == len(prompt) - 1
                    n += 1
            batch.n_tokens = n
            assert L.llama_decode(ctx, batch) == 0
            last = [L.llama_sampler_sample(greedy, ctx, (s + 1) * len(prompt) - 1) for s in range(B)]
            t0 = time.perf_counter()
            for step in range(steps):
                for s in range(B):
                    batch.token[s], batch.pos[s], batch.seq_id[s][0], batch.n_seq_id[s] = last[s], len(prompt) + step, s, 1
                    batch.logits[s] = 1
                batch.n_tokens = B
                assert L.llama_decode(ctx, batch) == 0
                last = [L.llama_sampler_sample(greedy, ctx, s) for s in range(B)]
            dt = time.perf_counter() - t0
            tok_s = B * steps / dt
            if best is None or tok_s > best["tok_s"]:
                best = {"B": B, "tok_s": round(tok_s, 1), "ms_step": round(1000 * dt / steps, 2)}
        out.append(best)
    L.llama_sampler_free(greedy)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2, help="best of N per B")
    a = ap.parse_args()
    for row in measure(a.model, [int(b) for b in a.batches.split(",")], a.steps, a.threads, a.repeats):
        print(json.dumps(row))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
