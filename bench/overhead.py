"""Where a runner step's time goes: llama_decode, sampling (C, per slot), and the Python around them.

Drives the runner's Engine in-process (no IPC) with N slots generating, wraps `llama_decode`
and `Sampler.sample` (penalties, then greedy argmax or llama.cpp's chain) with timers, and reports
per-step milliseconds. `--sampling greedy` (temperature 0, no penalties) or `ollama` (Ollama's
defaults: temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1 over the last 64 tokens).

    python bench/overhead.py --model PATH [--slots 1,4,8] [--tokens 64] [--threads 2] [--sampling greedy]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--slots", default="1,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sampling", choices=["greedy", "ollama"], default="greedy")
    a = ap.parse_args()

    import llama_cpp as L

    from server.runner import engine as E
    from server.runner.types import CompletionRequest, LoadSpec, SamplingOptions

    acc = {"decode": 0.0, "sample": 0.0}

    def timed(name, fn):
        def wrapper(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                acc[name] += time.perf_counter() - t

        return wrapper

    L.llama_decode = timed("decode", L.llama_decode)
    from server.runner.sampling import Sampler

    Sampler.sample = timed("sample", Sampler.sample)
    for n in [int(x) for x in a.slots.split(",")]:
        eng = E.Engine(LoadSpec(model_path=a.model, num_ctx=1024, num_parallel=n, num_threads=a.threads))
        opts = (SamplingOptions(temperature=0, repeat_penalty=1.0, num_predict=a.tokens) if a.sampling == "greedy"
                else SamplingOptions(num_predict=a.tokens, seed=42))
        for rep in range(2):  # the first round warms up
            for i in range(n):
                prompt = f"Run {rep}, story {i}: the keeper of the lighthouse opened the door and"
                eng.admit(eng.prepare(i, CompletionRequest(prompt=prompt, options=opts)))
            eng.step()  # prefill step, not counted
            acc["decode"] = acc["sample"] = 0.0
            steps = 0
            t0 = time.perf_counter()
            while eng.busy():
                eng.step()
                steps += 1
            wall = time.perf_counter() - t0
        py = wall - acc["decode"] - acc["sample"]
        print(json.dumps({
            "slots": n, "sampling": a.sampling, "steps": steps, "tok_s": round(n * (a.tokens - 1) / wall, 1),
            "ms_step": round(1000 * wall / steps, 2), "decode_ms": round(1000 * acc["decode"] / steps, 2),
            "sample_ms": round(1000 * acc["sample"] / steps, 3), "python_ms": round(1000 * py / steps, 3),
            "python_share": round(py / wall, 4),
        }), flush=True)
        eng.close()


if __name__ == "__main__":
    main()
