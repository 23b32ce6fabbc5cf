"""Time-to-first-token of each turn of a growing chat: does the prompt cache keep turn 10 cheap?

One conversation in Gemma's turn format; every turn appends a ~60-token user message to the
whole history (previous answers included) and generates --num-predict tokens greedily. Targets as
in bench/serving.py (runner, llama-server, ollama=URL with raw prompts), alternated per repetition.

    python bench/turns.py --model PATH --llama-server BIN [--turns 10] [--repeats 3]

Prints per target the median TTFT of turn 1 and of the last turn and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import LlamaServerTarget, OllamaTarget, RunnerTarget  # noqa: E402

TOPICS = "rivers mountains lanterns harbors orchards meadows glaciers canyons villages forests deserts islands".split()


def user_message(rep: int, turn: int) -> str:
    t = TOPICS[(turn + rep) % len(TOPICS)]
    return (
        f"Conversation {rep}, question {turn}: tell me something about {t}. I am especially curious "
        f"about how {t} change over the seasons, what animals live near {t}, and why people have "
        f"always written stories and songs about {t}. Keep it short."
    )


async def conversation(target, rep: int, turns: int, num_predict: int) -> list[float]:
    history = ""
    ttfts = []
    for turn in range(1, turns + 1):
        history += f"<start_of_turn>user\n{user_message(rep, turn)}<end_of_turn>\n<start_of_turn>model\n"
        ttft, _ = await target.request(history, num_predict)
        ttfts.append(ttft)
        history += "".join(target.last_text) + "<end_of_turn>\n"
    return ttfts


async def main_async(a) -> None:
    targets = []
    for t in a.targets.split(","):
        if t == "runner":
            targets.append(RunnerTarget(a.model, 1, a.num_ctx, a.threads, 512))
        elif t == "llama-server":
            targets.append(LlamaServerTarget(a.llama_server, a.model, 1, a.num_ctx, a.threads, 512))
        else:
            targets.append(OllamaTarget(t.split("=", 1)[1], a.model_name))
    results: dict[str, list[list[float]]] = {t.name: [] for t in targets}
    for t in targets:
        await t.start()
    try:
        for rep in range(a.repeats):
            order = targets if rep % 2 == 0 else list(reversed(targets))
            for t in order:
                ttfts = await conversation(t, rep, a.turns, a.num_predict)
                results[t.name].append(ttfts)
                print(json.dumps({"target": t.name, "repeat": rep, "ttft_ms": [round(x * 1000, 1) for x in ttfts]}), flush=True)
    finally:
        for t in targets:
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
    ap.add_argument("--targets", default="runner,llama-server")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-predict", type=int, default=32)
    ap.add_argument("--num-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
