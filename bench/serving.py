"""Served throughput and time-to-first-token at N concurrent streams, side by side.

Targets (alternated round by round, ABAB…, so machine noise hits all of them alike):
  stack              `stack serve` started here (bench/stackserve.py) with OLLAMA_NUM_PARALLEL = N,
                     the model created from the GGUF, over HTTP through /api/generate (raw prompts)
  stack-fa-off       the same with OLLAMA_FLASH_ATTENTION=0
  llama-server       llama.cpp's C++ server (bench/build-llama-server.sh), started here with
                     -np N -c N×num_ctx -t T -tb T, streamed through its /completion endpoint
  llama-cpp-python   `python -m llama_cpp.server --interrupt_requests False` started here (one
                     sequence: it serves requests one at a time), through /v1/completions
  runner             Corral's runner driven directly through its asyncio handle (no HTTP, no
                     server), num_parallel = N
  ollama=URL         any running Ollama-compatible server (Ollama itself) through /api/generate;
                     its parallelism is the server's own setting; --model-name names the model

Every target gets the same threads (-t/-tb, n_threads, num_thread), batch size and per-sequence
context, and the flash-attention setting llama.cpp picks by itself (auto: on for the CPU;
llama_cpp.server, whose default is off, is given --flash_attn True to match).

Each of the N clients sends --requests requests one after another (closed loop), every prompt
distinct; generation is greedy with a fixed num_predict and no repeat penalty. Aggregate tok/s =
generated tokens of all clients / wall time of the round; TTFT = request sent → first non-empty
text, as the client sees it.

    python bench/serving.py --model PATH --llama-server BIN [--streams 1,2,4,8] [--rounds 3]
        [--num-predict 64] [--requests 3] [--threads 2] [--targets stack,llama-server,llama-cpp-python]
        [--json OUT.jsonl]

Prints one JSON line per measurement and a table of medians with each target / llama-server ratio
(the median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stackserve import StackServe  # noqa: E402

# A new connection per request: servers close idle keep-alive connections after ~5 s (cpp-httplib,
# uvicorn), and a pooled connection closed under the client fails the request.
FRESH = httpx.Limits(max_keepalive_connections=0)

WORDS = "river mountain lantern harbor orchard meadow glacier canyon village forest desert island".split()


def prompt_for(rnd: int, client: int, req: int) -> str:
    w = WORDS[(client * 7 + req * 3 + rnd) % len(WORDS)]
    return (
        f"Chapter {rnd * 1000 + client * 100 + req}. The {w} was quiet when the old keeper of the {w} "
        f"began to tell the children the long story of how the {w} came to be. He said:"
    )


class RunnerTarget:
    name = "runner"

    def __init__(self, model: str, n: int, num_ctx: int, threads: int, num_batch: int) -> None:
        self.args = (model, n, num_ctx, threads, num_batch)
        self.runner = None

    async def start(self) -> None:
        from server.runner import LoadSpec, Runner

        model, n, num_ctx, threads, num_batch = self.args
        spec = LoadSpec(model_path=model, num_ctx=num_ctx, num_parallel=n, num_threads=threads, num_batch=num_batch)
        self.runner = await Runner.start(spec, load_timeout=120)

    async def request(self, prompt: str, num_predict: int) -> tuple[float, int]:
        from server.runner import CompletionRequest, SamplingOptions

        t0 = time.perf_counter()
        ttft = None
        opts = SamplingOptions(temperature=0, repeat_penalty=1.0, num_predict=num_predict)
        stream = await self.runner.completion(CompletionRequest(prompt=prompt, options=opts))
        self.last_text = []
        async for chunk in stream:
            if chunk.text and ttft is None:
                ttft = time.perf_counter() - t0
            self.last_text.append(chunk.text)
            if chunk.done:
                return ttft or (time.perf_counter() - t0), chunk.stats.eval_count
        raise RuntimeError("no final chunk")

    async def stop(self) -> None:
        await self.runner.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServerTarget:
    name = "llama-server"

    def __init__(self, binary: str, model: str, n: int, num_ctx: int, threads: int, num_batch: int) -> None:
        self.port = free_port()
        self.cmd = [
            binary, "-m", model, "--host", "127.0.0.1", "--port", str(self.port), "-np", str(n),
            "-c", str(num_ctx * n), "-t", str(threads), "-tb", str(threads), "-b", str(num_batch),
            "--no-webui", "--log-disable",
        ]
        self.proc = None
        self.client = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=600, limits=FRESH)
        await wait_healthy(self.client, "/health", self.proc, "llama-server")

    async def request(self, prompt: str, num_predict: int) -> tuple[float, int]:
        body = {"prompt": prompt, "n_predict": num_predict, "temperature": 0, "stream": True, "cache_prompt": True}
        t0 = time.perf_counter()
        ttft = None
        n = 0
        self.last_text = []
        async with self.client.stream("POST", "/completion", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                ev = json.loads(line[6:])
                if ev.get("content") and ttft is None:
                    ttft = time.perf_counter() - t0
                self.last_text.append(ev.get("content") or "")
                if ev.get("stop"):
                    n = ev.get("tokens_predicted") or ev.get("timings", {}).get("predicted_n", 0)
        return ttft or (time.perf_counter() - t0), n

    async def stop(self) -> None:
        await self.client.aclose()
        stop_process(self.proc)


class OllamaTarget:
    def __init__(self, url: str, model_name: str, options: dict | None = None) -> None:
        self.name = f"ollama={url}"
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.options = options or {}
        self.client = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.url, timeout=600, limits=FRESH)

    async def request(self, prompt: str, num_predict: int) -> tuple[float, int]:
        body = {
            "model": self.model_name, "prompt": prompt, "raw": True, "stream": True,
            "options": {**self.options, "temperature": 0, "repeat_penalty": 1.0, "num_predict": num_predict},
        }
        t0 = time.perf_counter()
        ttft = None
        n = 0
        self.last_text = []
        async with self.client.stream("POST", "/api/generate", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line:
                    continue
                ev = json.loads(line)
                if ev.get("response") and ttft is None:
                    ttft = time.perf_counter() - t0
                self.last_text.append(ev.get("response") or "")
                if ev.get("done"):
                    n = ev.get("eval_count", 0)
        return ttft or (time.perf_counter() - t0), n

    async def stop(self) -> None:
        await self.client.aclose()


class StackTarget(OllamaTarget):
    """`stack serve` started for this target with n slots, stopped by PID."""

    def __init__(self, model: str, n: int, num_ctx: int, threads: int, num_batch: int,
                 flash_attention: str = "") -> None:
        env = {"OLLAMA_FLASH_ATTENTION": flash_attention} if flash_attention else {}
        self.serve = StackServe(model, num_parallel=n, threads=threads, num_ctx=num_ctx, num_batch=num_batch,
                                env=env)
        super().__init__(self.serve.url, self.serve.model, self.serve.options())
        self.name = "stack-fa-off" if flash_attention == "0" else "stack"

    async def start(self) -> None:
        await asyncio.to_thread(self.serve.start)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await asyncio.to_thread(self.serve.stop)


class LlamaCppPythonTarget:
    """`python -m llama_cpp.server` (llama-cpp-python's own server: one sequence, requests served
    one after another), streamed through /v1/completions."""

    name = "llama-cpp-python"

    def __init__(self, model: str, num_ctx: int, threads: int, num_batch: int) -> None:
        self.port = free_port()
        self.cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(num_ctx), "--n_batch", str(num_batch),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--flash_attn", "True",
            "--interrupt_requests", "False", "--verbose", "False",
        ]
        self.proc = None
        self.client = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=600, limits=FRESH)
        await wait_healthy(self.client, "/v1/models", self.proc, "llama_cpp.server")

    async def request(self, prompt: str, num_predict: int) -> tuple[float, int]:
        body = {"prompt": prompt, "max_tokens": num_predict, "temperature": 0, "repeat_penalty": 1.0,
                "stream": True}
        t0 = time.perf_counter()
        ttft = None
        n = 0
        self.last_text = []
        async with self.client.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                text = "".join(c.get("text") or "" for c in ev.get("choices", []))
                if text and ttft is None:
                    ttft = time.perf_counter() - t0
                if text:
                    n += 1  # one streamed chunk per generated token
                self.last_text.append(text)
        return ttft or (time.perf_counter() - t0), n

    async def stop(self) -> None:
        await self.client.aclose()
        stop_process(self.proc)


async def wait_healthy(client: httpx.AsyncClient, path: str, proc: subprocess.Popen, what: str) -> None:
    for _ in range(1200):
        try:
            r = await client.get(path)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        await asyncio.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"{what} did not become healthy")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def one_round(target, n: int, rnd: int, requests: int, num_predict: int) -> dict:
    ttfts: list[float] = []
    tokens = 0

    async def client(c: int) -> None:
        nonlocal tokens
        for q in range(requests):
            ttft, k = await target.request(prompt_for(rnd, c, q), num_predict)
            ttfts.append(ttft)
            tokens += k

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(n)))
    wall = time.perf_counter() - t0
    return {
        "target": target.name, "streams": n, "round": rnd, "tokens": tokens, "wall_s": round(wall, 3),
        "tok_s": round(tokens / wall, 1), "ttft_median_ms": round(1000 * statistics.median(ttfts), 1),
    }


def make_targets(a, n: int) -> list:
    out = []
    for t in a.targets.split(","):
        if t == "runner":
            out.append(RunnerTarget(a.model, n, a.num_ctx, a.threads, a.num_batch))
        elif t in ("stack", "stack-fa-off"):
            out.append(StackTarget(a.model, n, a.num_ctx, a.threads, a.num_batch, "0" if t == "stack-fa-off" else ""))
        elif t == "llama-cpp-python":
            out.append(LlamaCppPythonTarget(a.model, a.num_ctx, a.threads, a.num_batch))
        elif t == "llama-server":
            out.append(LlamaServerTarget(a.llama_server, a.model, n, a.num_ctx, a.threads, a.num_batch))
        elif t.startswith("ollama="):
            out.append(OllamaTarget(t.split("=", 1)[1], a.model_name))
        else:
            raise SystemExit(f"unknown target {t!r}")
    return out


async def main_async(a) -> list[dict]:
    rows = []
    out = open(a.json, "a") if a.json else None
    for n in [int(x) for x in a.streams.split(",")]:
        targets = make_targets(a, n)
        started = []
        try:
            for t in targets:
                await t.start()
                started.append(t)
                await t.request(prompt_for(999, 0, 0), 8)  # warm-up
            for rnd in range(a.rounds):
                order = targets if rnd % 2 == 0 else list(reversed(targets))
                for t in order:
                    row = await one_round(t, n, rnd, a.requests, a.num_predict)
                    rows.append(row)
                    line = json.dumps(row)
                    print(line, flush=True)
                    if out:
                        out.write(line + "\n")
                        out.flush()
        finally:
            for t in started:
                await t.stop()
    return rows


def summarize(rows: list[dict], base: str = "llama-server") -> str:
    """Medians per target and stream count, and each target / `base` as the median of the
    per-round ratios (rounds were interleaved, so round r of both ran side by side)."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((r["streams"], r["target"]), []).append(r)
    order = ["stack", "stack-fa-off", "runner", "llama-server", "llama-cpp-python"]
    targets = sorted({r["target"] for r in rows}, key=lambda t: (order.index(t) if t in order else len(order), t))
    others = [t for t in targets if t != base] if base in targets else []
    head = " | ".join(f"{t} tok/s | {t} TTFT ms" for t in targets)
    ratios = " | ".join(f"{t} / {base} tok/s | TTFT" for t in others)
    lines = ["| streams | " + head + (" | " + ratios if ratios else "") + " |"]
    lines.append("|" + "---|" * (1 + 2 * len(targets) + 2 * len(others)))
    for n in sorted({r["streams"] for r in rows}):
        cells = []
        for t in targets:
            rs = by.get((n, t), [])
            tok = statistics.median(r["tok_s"] for r in rs) if rs else float("nan")
            ttft = statistics.median(r["ttft_median_ms"] for r in rs) if rs else float("nan")
            cells += [f"{tok:.1f}", f"{ttft:.0f}"]
        for t in others:
            pairs = list(zip(by.get((n, t), []), by.get((n, base), [])))
            if pairs:
                cells += [f"{statistics.median(x['tok_s'] / y['tok_s'] for x, y in pairs):.2f}",
                          f"{statistics.median(x['ttft_median_ms'] / y['ttft_median_ms'] for x, y in pairs):.2f}"]
            else:
                cells += ["", ""]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GGUF path (runner, llama-server)")
    ap.add_argument("--model-name", default="gemma3", help="model name for ollama= targets")
    ap.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", "/tmp/corral-llama-server/build/bin/llama-server"))
    ap.add_argument("--targets", default="stack,llama-server,llama-cpp-python")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3, help="requests per client per round")
    ap.add_argument("--num-predict", type=int, default=64)
    ap.add_argument("--num-ctx", type=int, default=2048, help="per slot")
    ap.add_argument("--num-batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="append every measurement to this JSONL file")
    a = ap.parse_args()

    def on_term(*_):  # run the targets' stop() (llama-server is a separate process) on kill
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    rows = asyncio.run(main_async(a))
    print()
    print(summarize(rows))


if __name__ == "__main__":
    main()
