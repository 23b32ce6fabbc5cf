"""Time-to-first-token of each turn of a growing chat: does the prompt cache keep turn 10 cheap?

One conversation; every turn appends a ~60-token user message to the whole history (previous
answers included) and generates --num-predict tokens greedily. Targets, alternated per repetition:
  stack          `stack serve` started here (1 slot, bench/stackserve.py), `/api/chat` with the
                 messages: the server renders the template (Ollama's gemma3 TEMPLATE) itself
  stack-fa-off   the same with OLLAMA_FLASH_ATTENTION=0 (cheaper attention over a long cached
                 history for a short new prompt; see docs/benchmarks.md)
  llama-server   llama.cpp's C++ server (-np 1), `/v1/chat/completions` with the messages
                 (the GGUF's chat template, `cache_prompt` on)
  runner         Corral's runner in-process, the history as a raw Gemma-format prompt
  ollama=URL     a running Ollama-compatible server, raw prompts through /api/generate

    python bench/turns.py --model PATH --llama-server BIN [--targets stack,llama-server]
        [--turns 10] [--repeats 3] [--num-predict 32] [--threads 2]

Prints one JSON line per conversation (TTFT per turn, and the prompt tokens the server says it
evaluated per turn: only the new ones when the cache holds the history), then per target the
median TTFT of turn 1 and of the last turn and the median of the per-conversation ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import LlamaServerTarget, OllamaTarget, RunnerTarget, StackTarget  # noqa: E402

TOPICS = "rivers mountains lanterns harbors orchards meadows glaciers canyons villages forests deserts islands".split()


def user_message(rep: int, turn: int) -> str:
    t = TOPICS[(turn + rep) % len(TOPICS)]
    return (
        f"Conversation {rep}, question {turn}: tell me something about {t}. I am especially curious "
        f"about how {t} change over the seasons, what animals live near {t}, and why people have "
        f"always written stories and songs about {t}. Keep it short."
    )


class StackChat(StackTarget):
    """stack serve's /api/chat: the messages go over the wire, the server renders them."""

    async def chat(self, messages: list[dict], num_predict: int) -> tuple[float, int]:
        body = {"model": self.model_name, "messages": messages, "stream": True,
                "options": {**self.options, "temperature": 0, "repeat_penalty": 1.0, "num_predict": num_predict}}
        t0 = time.perf_counter()
        ttft = None
        evaluated = 0
        self.last_text = []
        async with self.client.stream("POST", "/api/chat", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line:
                    continue
                ev = json.loads(line)
                text = (ev.get("message") or {}).get("content") or ""
                if text and ttft is None:
                    ttft = time.perf_counter() - t0
                self.last_text.append(text)
                if ev.get("done"):
                    evaluated = ev.get("prompt_eval_count", 0)
        return ttft or (time.perf_counter() - t0), evaluated


class LlamaServerChat(LlamaServerTarget):
    """llama-server's /v1/chat/completions (its own template rendering, prompt cache on)."""

    async def chat(self, messages: list[dict], num_predict: int) -> tuple[float, int]:
        body = {"messages": messages, "max_tokens": num_predict, "temperature": 0, "stream": True,
                "cache_prompt": True, "timings_per_token": False}
        t0 = time.perf_counter()
        ttft = None
        evaluated = 0
        self.last_text = []
        async with self.client.stream("POST", "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                text = "".join((c.get("delta") or {}).get("content") or "" for c in ev.get("choices", []))
                if text and ttft is None:
                    ttft = time.perf_counter() - t0
                self.last_text.append(text)
                if "timings" in ev:
                    evaluated = ev["timings"].get("prompt_n", 0)
        return ttft or (time.perf_counter() - t0), evaluated


async def conversation(target, rep: int, turns: int, num_predict: int) -> tuple[list[float], list[int]]:
    """TTFT of every turn and the prompt tokens evaluated (0 where the target does not say)."""
    history = ""
    messages: list[dict] = []
    ttfts, evaluated = [], []
    for turn in range(1, turns + 1):
        if hasattr(target, "chat"):
            messages.append({"role": "user", "content": user_message(rep, turn)})
            ttft, n = await target.chat(messages, num_predict)
            messages.append({"role": "assistant", "content": "".join(target.last_text)})
        else:
            history += f"<start_of_turn>user\n{user_message(rep, turn)}<end_of_turn>\n<start_of_turn>model\n"
            ttft, n = await target.request(history, num_predict)
            history += "".join(target.last_text) + "<end_of_turn>\n"
            n = 0  # the generated count, not the evaluated one
        ttfts.append(ttft)
        evaluated.append(n)
    return ttfts, evaluated


async def main_async(a) -> None:
    targets = []
    for t in a.targets.split(","):
        if t == "runner":
            targets.append(RunnerTarget(a.model, 1, a.num_ctx, a.threads, 512))
        elif t in ("stack", "stack-fa-off"):
            targets.append(StackChat(a.model, 1, a.num_ctx, a.threads, 512, "0" if t == "stack-fa-off" else ""))
        elif t == "llama-server":
            targets.append(LlamaServerChat(a.llama_server, a.model, 1, a.num_ctx, a.threads, 512))
        elif t.startswith("ollama="):
            targets.append(OllamaTarget(t.split("=", 1)[1], a.model_name))
        else:
            raise SystemExit(f"unknown target {t!r}")
    results: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    started = []
    try:
        for t in targets:
            await t.start()
            started.append(t)
        for rep in range(a.repeats):
            order = targets if rep % 2 == 0 else list(reversed(targets))
            for t in order:
                ttfts, evaluated = await conversation(t, rep, a.turns, a.num_predict)
                results[t.name].append(ttfts)
                print(json.dumps({"target": t.name, "repeat": rep, "ttft_ms": [round(x * 1000, 1) for x in ttfts],
                                  "prompt_eval_count": evaluated}), flush=True)
    finally:
        for t in started:
            await t.stop()
    print()
    print(f"| target | turn 1 TTFT ms | turn {a.turns} TTFT ms | ratio |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        first = statistics.median(r[0] for r in runs) * 1000
        last = statistics.median(r[-1] for r in runs) * 1000
        ratio = statistics.median(r[-1] / r[0] for r in runs)
        print(f"| {name} | {first:.0f} | {last:.0f} | {ratio:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--model-name", default="gemma3")
    ap.add_argument("--llama-server", default="/tmp/corral-llama-server/build/bin/llama-server")
    ap.add_argument("--targets", default="stack,llama-server")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-predict", type=int, default=32)
    ap.add_argument("--num-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    def on_term(*_):  # run the targets' stop() (servers are separate processes) on kill
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
