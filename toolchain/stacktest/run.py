"""Running tests against a server through the public API (`/api/chat`, via toolchain.client).

`run(client, jobs, parallel)` asks every (test, model) of `jobs` and returns one `Result` per job
in the order given. Jobs run concurrently, at most `parallel` at a time (the server's parallel
slots: more would only queue), except that jobs in the same *lane* run one after another. A
lane is a model's weights (`lanes()`): a server runs every model built on one weights file in
one runner, and llama.cpp's batched decoding gives (slightly) different logits depending on
which other requests share the batch, so two answers at temperature 0 with one seed are only
identical when the model's runner answers one request at a time. A request that fails (server gone, model missing, a
refused option) makes that test's outcome `error` with the server's message; the other tests
still run. Ctrl-C cancels the tests not yet started and re-raises.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Sequence

import httpx

from toolchain.client import Client
from toolchain.errors import CorralError
from toolchain.stacktest.check import Answer, check
from toolchain.stacktest.collect import Test

Outcome = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class Job:
    test: Test
    model: str  # the model to ask (the test's own model, or a scratch copy of its proposed version)
    lane: str = ""  # jobs of one lane run one at a time (default: the model's name)


@dataclass
class Result:
    test: Test
    model: str  # the model that was asked
    outcome: Outcome
    reasons: list[str] = field(default_factory=list)  # why it failed
    answer: Optional[Answer] = None
    error: Optional[str] = None  # why it could not run

    @property
    def reason(self) -> str:
        return self.error if self.error is not None else "; ".join(self.reasons)


def ask(client: Client, test: Test, model: str) -> Answer:
    """One test's chat, streamed; raises CorralError (APIError/ConnectError) on failure."""
    started = time.monotonic()
    parts: list[str] = []
    last: dict = {}
    for chunk in client.chat(test.case.request(model)):
        parts.append((chunk.get("message") or {}).get("content") or "")
        last = chunk
    if not last.get("done"):
        raise CorralError("the answer ended before the server said it was done")
    total, load = last.get("total_duration"), last.get("load_duration") or 0
    seconds = (total - load) / 1e9 if total else time.monotonic() - started
    return Answer("".join(parts), last.get("eval_count"), max(seconds, 0.0), last.get("done_reason"))


def run_one(client: Client, job: Job) -> Result:
    try:
        answer = ask(client, job.test, job.model)
    except CorralError as exc:
        return Result(job.test, job.model, "error", error=str(exc))
    except httpx.HTTPError as exc:  # the server went away or stalled mid-answer
        return Result(job.test, job.model, "error", error=f"the answer broke off: {exc or type(exc).__name__}")
    except ValueError as exc:  # a line that is not JSON
        return Result(job.test, job.model, "error", error=f"the server sent a malformed answer: {exc}")
    reasons = check(answer, job.test.case.expect)
    return Result(job.test, job.model, "fail" if reasons else "pass", reasons, answer)


def run(
    client: Client,
    jobs: Sequence[Job],
    parallel: int = 1,
    on_result: Optional[Callable[[Result], None]] = None,
) -> list[Result]:
    """Every job's result, in order; at most `parallel` lanes at a time, one job per lane at a time."""
    results: list[Optional[Result]] = [None] * len(jobs)
    by_lane: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        by_lane.setdefault(job.lane or job.model, []).append(i)
    stop = threading.Event()

    def run_lane(indexes: list[int]) -> None:
        for i in indexes:
            if stop.is_set():
                return
            results[i] = run_one(client, jobs[i])
            if on_result is not None:
                on_result(results[i])  # type: ignore[arg-type]

    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(parallel, len(by_lane))), thread_name_prefix="stack-test")
    try:
        for future in cf.as_completed([pool.submit(run_lane, ix) for ix in by_lane.values()]):
            future.result()
    except BaseException:
        stop.set()  # Ctrl-C: no new requests; those in flight end on their own (num_predict is bounded)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [r for r in results if r is not None]


def lanes(client: Client, models: Sequence[str]) -> dict[str, str]:
    """Model name -> its lane: the digest of its weights (from `/api/show`), else its own name."""
    from toolchain.stack.actual import blob_digests

    out: dict[str, str] = {}
    for model in dict.fromkeys(models):
        try:
            base, adapters = blob_digests(client.show(model).get("modelfile") or "")
        except (CorralError, httpx.HTTPError):
            base, adapters = None, ()
        out[model] = f"{base}+{','.join(adapters)}" if base else model
    return out


def exit_code(results: Sequence[Result]) -> int:
    """0 when every test passes, 1 when any fails, 2 when any could not run."""
    if any(r.outcome == "error" for r in results):
        return 2
    if any(r.outcome == "fail" for r in results):
        return 1
    return 0
