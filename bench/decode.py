"""Single-stream decode speed: llama-cpp-python in-process vs through `stack serve`'s /api/generate.

Targets, alternated round by round (ABAB…):
  in-process   `llama_cpp.Llama` in this process (n_threads = n_threads_batch = --threads,
               flash attention on as llama.cpp's auto picks for the CPU), streaming
               `create_completion`: llama-cpp-python as an application uses it
  low-level    the tightest in-process loop: llama-cpp-python's low-level API, one
               `llama_decode` + greedy `llama_sampler_sample` per token (the ceiling at B=1)
  stack        `stack serve` started here (1 slot, bench/stackserve.py), streaming
               /api/generate with a raw prompt, num_thread = --threads

Both generate exactly --tokens tokens greedily (no repeat penalty, no stop) from the same
prompts. Decode tok/s = (tokens - 1) / (time of the last token - time of the first), as the
client sees them, so prompt evaluation is excluded; for stack the server's own
eval_count / eval_duration is reported too.

    python bench/decode.py --model PATH [--rounds 5] [--tokens 128] [--threads 2]

Prints one JSON line per measurement, then the medians and the medians of the per-round ratios
stack / in-process and stack / low-level (the issue's target: ≥ 0.97).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stackserve import StackServe  # noqa: E402


def prompt_for(rnd: int) -> str:
    return (f"Story {rnd}. The lighthouse keeper climbed the stairs at dusk, lit the great lamp, and "
            f"then sat down to write in the log about the ship he had seen that morning:")


class InProcess:
    name = "in-process"

    def __init__(self, model: str, threads: int, num_ctx: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=model, n_ctx=num_ctx, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, flash_attn=True, verbose=False)

    def run(self, prompt: str, tokens: int) -> dict:
        stamps = []
        for chunk in self.llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, repeat_penalty=1.0,
                                                stream=True):
            if chunk["choices"][0]["text"]:  # the last chunk carries only finish_reason
                stamps.append(time.perf_counter())
        self.llm.reset()  # no prompt cache between rounds: both targets start from an empty sequence
        return {"tokens": len(stamps), "tok_s": rate(stamps)}

    def close(self) -> None:
        self.llm.close()


class LowLevel:
    name = "low-level"

    def __init__(self, model: str, threads: int, num_ctx: int) -> None:
        import llama_cpp as L

        self.L = L
        self._quiet = L.llama_log_callback(lambda *a: None)  # kept referenced: C calls it later
        L.llama_log_set(self._quiet, None)
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(model.encode(), L.llama_model_default_params())
        self.vocab = L.llama_model_get_vocab(self.model)
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = num_ctx, 512, 512, 1
        cp.n_threads = cp.n_threads_batch = threads
        cp.swa_full = True
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.batch = L.llama_batch_init(512, 0, 1)
        self.greedy = L.llama_sampler_init_greedy()

    def run(self, prompt: str, tokens: int) -> dict:
        L, batch = self.L, self.batch
        data = prompt.encode()
        buf = (L.llama_token * (len(data) + 8))()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, True)
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        for j in range(n):
            batch.token[j], batch.pos[j], batch.seq_id[j][0], batch.n_seq_id[j] = buf[j], j, 0, 1
            batch.logits[j] = j == n - 1
        batch.n_tokens = n
        assert L.llama_decode(self.ctx, batch) == 0
        stamps = []
        pos = n
        for _ in range(tokens):
            tok = L.llama_sampler_sample(self.greedy, self.ctx, -1)
            stamps.append(time.perf_counter())
            if L.llama_vocab_is_eog(self.vocab, tok):
                break
            batch.token[0], batch.pos[0], batch.seq_id[0][0], batch.n_seq_id[0], batch.logits[0] = tok, pos, 0, 1, 1
            batch.n_tokens = 1
            assert L.llama_decode(self.ctx, batch) == 0
            pos += 1
        return {"tokens": len(stamps), "tok_s": rate(stamps)}

    def close(self) -> None:
        L = self.L
        L.llama_sampler_free(self.greedy)
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)


class Stack:
    name = "stack"

    def __init__(self, model: str, threads: int, num_ctx: int) -> None:
        self.serve = StackServe(model, num_parallel=1, threads=threads, num_ctx=num_ctx).start()
        self.client = httpx.Client(base_url=self.serve.url, timeout=600)

    def run(self, prompt: str, tokens: int) -> dict:
        body = {"model": self.serve.model, "prompt": prompt, "raw": True, "stream": True,
                "options": self.serve.options(temperature=0, repeat_penalty=1.0, num_predict=tokens)}
        stamps = []
        final = {}
        with self.client.stream("POST", "/api/generate", json=body) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line:
                    continue
                ev = json.loads(line)
                if ev.get("response"):
                    stamps.append(time.perf_counter())
                if ev.get("done"):
                    final = ev
        server = final.get("eval_count", 0) / (final.get("eval_duration", 0) / 1e9) if final.get("eval_duration") else 0
        return {"tokens": final.get("eval_count", len(stamps)), "tok_s": rate(stamps), "server_tok_s": round(server, 1)}

    def close(self) -> None:
        self.client.close()
        self.serve.stop()


def rate(stamps: list[float]) -> float:
    """Tokens per second between the first and the last streamed token (one chunk per token)."""
    if len(stamps) < 2:
        return 0.0
    return round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-ctx", type=int, default=2048)
    a = ap.parse_args()

    def on_term(*_):  # stop stack serve (a separate process) on kill
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    targets = []
    try:
        targets.append(InProcess(a.model, a.threads, a.num_ctx))
        targets.append(LowLevel(a.model, a.threads, a.num_ctx))
        targets.append(Stack(a.model, a.threads, a.num_ctx))
        for t in targets:
            t.run(prompt_for(999), 8)  # warm-up
        rows: dict[str, list[dict]] = {t.name: [] for t in targets}
        for rnd in range(a.rounds):
            for t in targets if rnd % 2 == 0 else list(reversed(targets)):
                row = {"target": t.name, "round": rnd, **t.run(prompt_for(rnd), a.tokens)}
                rows[t.name].append(row)
                print(json.dumps(row), flush=True)
    finally:
        for t in targets:
            t.close()
    med = {name: statistics.median(r["tok_s"] for r in rs) for name, rs in rows.items()}

    def ratio(base: str) -> float:
        return statistics.median(s["tok_s"] / b["tok_s"] for s, b in zip(rows["stack"], rows[base]))

    server = statistics.median(r["server_tok_s"] for r in rows["stack"])
    print()
    print("| in-process (Llama) tok/s | low-level tok/s | stack serve tok/s (client) | stack serve (server's eval) "
          "| stack / in-process | stack / low-level |")
    print("|---|---|---|---|---|---|")
    print(f"| {med['in-process']:.1f} | {med['low-level']:.1f} | {med['stack']:.1f} | {server:.1f} "
          f"| {ratio('in-process'):.2f} | {ratio('low-level'):.2f} |")


if __name__ == "__main__":
    main()
