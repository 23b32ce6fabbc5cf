"""Cost of evaluating N new tokens of one sequence after P cached ones, flash attention on and off.

What a short prompt after a long cached history (a chat's next turn) costs depends on which of
ggml's CPU flash-attention kernels takes it: stock llama.cpp runs ≥ 64 query rows of a sequence
(GGML_FA_TILE_Q) through a tiled GEMM kernel, in chunks of n_threads×4 equal row ranges, and
fewer rows one at a time; with scripts/llama-patches (what scripts/install builds) the tiled
kernel takes ≥ 8 rows, in whole tiles. docs/benchmarks.md has the tables.
Low-level llama.cpp API, one context per setting, the prefix evaluated once per P; each (P, N) is
evaluated --repeats times, alternating the settings, and removed again; the minimum and the
median are printed.

    python bench/fa_rows.py --model PATH [--cached 0,512,1024,2048] [--new 24,32,40,48,56,60,63,64,72]
        [--threads 1] [--flash 1,0] [--repeats 7]

The llama.cpp libraries are llama-cpp-python's, or LLAMA_CPP_LIB_PATH's (another build of the
same version, e.g. one without the patch; its libllama finds ggml by its RUNPATH unless
LD_LIBRARY_PATH names the same directory): each line names the ggml CPU library it ran.
With --threads 1 the time is the process's CPU time, which another process on the machine
disturbs far less than wall time; with more threads it is wall time. One JSON line per point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import llama_cpp as L


@L.llama_log_callback
def _quiet(level, text, user):  # pragma: no cover - called from C
    pass


def loaded_ggml_cpu() -> str | None:
    """The file of ggml's CPU backend this process runs (Linux): what LLAMA_CPP_LIB_PATH's
    libllama actually resolved, RUNPATH and LD_LIBRARY_PATH included."""
    try:
        with open("/proc/self/maps") as f:
            return next((line.split()[-1] for line in f if "libggml-cpu" in line), None)
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--cached", default="0,512,1024,2048")
    ap.add_argument("--new", default="24,32,40,48,56,60,63,64,72")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flash", default="1,0", help="flash attention settings to run: 1 on, 0 off")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    cached = [int(x) for x in a.cached.split(",")]
    new = [int(x) for x in a.new.split(",")]
    clock = time.process_time if a.threads == 1 else time.perf_counter

    L.llama_log_set(_quiet, None)
    L.llama_backend_init()
    model = L.llama_model_load_from_file(a.model.encode(), L.llama_model_default_params())
    batch = L.llama_batch_init(512, 0, 1)

    def decode(ctx, start: int, n: int) -> float:
        for j in range(n):
            batch.token[j] = 1000 + (start + j) % 5000
            batch.pos[j] = start + j
            batch.seq_id[j][0] = 0
            batch.n_seq_id[j] = 1
            batch.logits[j] = j == n - 1
        batch.n_tokens = n
        t = clock()
        if L.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        return (clock() - t) * 1000

    libs = loaded_ggml_cpu() or f"llama-cpp-python {L.__version__}"
    ctxs = {}
    for fa in (x == "1" for x in a.flash.split(",")):
        cp = L.llama_context_default_params()
        cp.n_ctx = max(cached) + max(new) + 256
        cp.n_batch = cp.n_ubatch = 512
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = a.threads
        cp.swa_full = True  # as the runner
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if fa else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctxs[fa] = L.llama_init_from_model(model, cp)
    for p in cached:
        for ctx in ctxs.values():
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            for start in range(0, p, 512):
                decode(ctx, start, min(512, p - start))
        for n in new:
            times: dict[bool, list[float]] = {fa: [] for fa in ctxs}
            order = list(ctxs.items())
            for r in range(a.repeats):
                for fa, ctx in (order if r % 2 == 0 else order[::-1]):
                    times[fa].append(decode(ctx, p, n))
                    L.llama_memory_seq_rm(L.llama_get_memory(ctx), 0, p, -1)
            for fa, ts in times.items():
                print(json.dumps({"flash_attention": fa, "cached": p, "new": n, "threads": a.threads,
                                  "ms_min": round(min(ts), 1), "ms_median": round(statistics.median(ts), 1),
                                  "libs": libs}), flush=True)
    for ctx in ctxs.values():
        L.llama_free(ctx)
    L.llama_batch_free(batch)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
