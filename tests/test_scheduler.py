"""The scheduler's decisions: reuse, reload, slots, the queue limit, LRU eviction, keep-alive.

The scheduler's contract with a runner is only `alive` and `close()`; these tests give it a
small in-process runner object so that "busy", "crashed" and "slow to load" can be arranged
exactly. The same decisions are exercised against the real llama.cpp runner through the HTTP
API in tests/test_inference_api.py.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from server.runner.types import LoadSpec
from server.scheduler import QUEUE_FULL, ModelRef, QueueFull, Scheduler, SchedulerError, Settings, \
    settings_from_env


class Proc:
    """Stands in for a runner process: records its spec and whether it was closed."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.alive = True
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        self.alive = False


class Starter:
    def __init__(self) -> None:
        self.started: list[Proc] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def __call__(self, spec: LoadSpec, timeout: float | None) -> Proc:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        proc = Proc(spec)
        self.started.append(proc)
        return proc


def spec(path: str = "/m/a", num_ctx: int = 2048, parallel: int = 2) -> LoadSpec:
    return LoadSpec(model_path=path, num_ctx=num_ctx, num_parallel=parallel)


def ref(name: str = "a:latest", size: int = 0) -> ModelRef:
    return ModelRef(name=name, size=size)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def make(**kw) -> tuple[Scheduler, Starter]:
    starter = Starter()
    memory = kw.pop("memory", lambda: 1 << 40)
    return Scheduler(Settings(**kw), starter, memory=memory), starter


def test_reuses_a_loaded_runner_and_reloads_on_a_new_spec():
    async def main():
        s, st = make()
        a = await s.acquire(spec(), ref())
        a.release()
        b = await s.acquire(spec(), ref())
        b.release()
        assert len(st.started) == 1 and b.runner is a.runner
        c = await s.acquire(spec(num_ctx=4096), ref())
        assert len(st.started) == 2 and st.started[0].closed and c.runner is st.started[1]
        assert c.load_seconds >= 0
        c.release()
        await s.close()
        assert st.started[1].closed

    run(main())


def test_slots_limit_concurrency_and_waiters_count_against_the_queue():
    async def main():
        s, st = make(max_queue=1)
        one = await s.acquire(spec(parallel=1), ref())
        waiter = asyncio.create_task(s.acquire(spec(parallel=1), ref()))
        await asyncio.sleep(0)
        assert not waiter.done() and s.pending == 1
        # a loaded model's slot wait is bounded too (unlike ollama/ollama#7758)
        with pytest.raises(QueueFull) as info:
            await s.acquire(spec(parallel=1), ref())
        assert info.value.status == 503 and info.value.message == QUEUE_FULL
        one.release()
        two = await waiter
        assert two.runner is one.runner and s.pending == 0
        two.release()
        await s.close()

    run(main())


def test_queued_requests_are_counted_by_model():
    async def main():
        s, st = make(max_queue=10)
        a = await s.acquire(spec("/m/a", parallel=1), ref("a:latest"))
        b = await s.acquire(spec("/m/b", parallel=1), ref("b:latest"))
        waiters = [asyncio.create_task(s.acquire(spec(p, parallel=1), ref(n)))
                   for p, n in (("/m/a", "a:latest"), ("/m/a", "a:latest"), ("/m/b", "b:latest"))]
        await asyncio.sleep(0)
        assert s.pending == 3 and s.queued() == [("a:latest", 2), ("b:latest", 1)]
        waiters[2].cancel()  # a client that leaves gives back its place in its model's queue
        with pytest.raises(asyncio.CancelledError):
            await waiters[2]
        assert s.queued() == [("a:latest", 2)]
        a.release()
        (await waiters[0]).release()
        (await waiters[1]).release()
        assert s.pending == 0 and s.queued() == []
        b.release()
        await s.close()

    run(main())


def test_lru_idle_model_is_evicted_at_max_loaded_models():
    async def main():
        s, st = make(max_loaded_models=2)
        for path in ("/m/a", "/m/b"):
            (await s.acquire(spec(path), ref(path))).release()
        (await s.acquire(spec("/m/a"), ref("/m/a"))).release()  # a is now the most recent
        (await s.acquire(spec("/m/c"), ref("/m/c"))).release()
        loaded = sorted(r.name for r, *_ in s.running())
        assert loaded == ["/m/a", "/m/c"]
        assert [p.closed for p in st.started] == [False, True, False]
        await s.close()

    run(main())


def test_a_busy_model_is_waited_for_when_none_is_idle():
    async def main():
        s, st = make(max_loaded_models=1)
        busy = await s.acquire(spec("/m/a"), ref("/m/a"))
        other = asyncio.create_task(s.acquire(spec("/m/b"), ref("/m/b")))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not other.done() and not st.started[0].closed
        busy.release()
        lease = await other
        assert st.started[0].closed and lease.runner is st.started[1]
        lease.release()
        await s.close()

    run(main())


def test_memory_check_evicts_then_refuses_what_cannot_fit():
    async def main():
        free = {"bytes": 1000}
        s, st = make(memory=lambda: free["bytes"])
        (await s.acquire(spec("/m/a"), ref("/m/a", size=600))).release()
        free["bytes"] = 400  # a is loaded; b (600) does not fit until a is gone

        orig_close = st.started[0].close

        async def close_and_free():
            await orig_close()
            free["bytes"] = 1000

        st.started[0].close = close_and_free
        (await s.acquire(spec("/m/b"), ref("/m/b", size=600))).release()
        assert st.started[0].closed and len(st.started) == 2
        with pytest.raises(SchedulerError) as info:
            await s.acquire(spec("/m/c"), ref("/m/c", size=10_000))
        assert "more system memory" in info.value.message and info.value.status == 500
        await s.close()

    run(main())


def test_keep_alive_zero_unloads_when_idle_and_forever_never_expires():
    async def main():
        s, st = make()
        lease = await s.acquire(spec(), ref(), keep_alive=0.0)
        lease.release()
        for _ in range(5):
            await asyncio.sleep(0)
        assert st.started[0].closed and s.running() == []
        lease = await s.acquire(spec(), ref(), keep_alive=math.inf)
        lease.release()
        (_, _, expires, _), = s.running()
        assert expires == math.inf
        # a request without keep_alive keeps the runner's current one
        (await s.acquire(spec(), ref())).release()
        assert s.running()[0][2] == math.inf
        await s.close()

    run(main())


def test_keep_alive_timer_unloads_after_its_duration():
    async def main():
        s, st = make()
        (await s.acquire(spec(), ref(), keep_alive=0.05)).release()
        assert s.running()
        for _ in range(200):
            if st.started[0].closed:
                break
            await asyncio.sleep(0.01)
        assert st.started[0].closed and s.running() == []
        await s.close()

    run(main())


def test_expire_unloads_after_the_running_request_ends():
    async def main():
        s, st = make()
        lease = await s.acquire(spec(), ref())
        assert s.expire("/m/a") and not s.expire("/m/zzz")
        await asyncio.sleep(0)
        assert not st.started[0].closed
        lease.release()
        for _ in range(5):
            await asyncio.sleep(0)
        assert st.started[0].closed
        await s.close()

    run(main())


def test_a_crashed_runner_is_replaced_by_the_next_request():
    async def main():
        s, st = make()
        lease = await s.acquire(spec(), ref())
        st.started[0].alive = False
        lease.runner_failed()
        lease.release()  # idempotent
        again = await s.acquire(spec(), ref())
        assert again.runner is st.started[1] and len(st.started) == 2
        again.release()
        # found dead while idle: replaced as well
        st.started[1].alive = False
        third = await s.acquire(spec(), ref())
        assert third.runner is st.started[2]
        third.release()
        await s.close()

    run(main())


def test_load_failure_is_a_500_and_leaves_nothing_loaded():
    async def main():
        s, st = make()
        st.fail = RuntimeError("bad file")
        with pytest.raises(SchedulerError) as info:
            await s.acquire(spec(), ref())
        assert info.value.status == 500 and "bad file" in info.value.message
        assert s.running() == [] and s.pending == 0
        await s.close()

    run(main())


def test_cancelled_waiter_gives_back_its_place():
    async def main():
        s, st = make(max_queue=1)
        held = await s.acquire(spec(parallel=1), ref())
        waiter = asyncio.create_task(s.acquire(spec(parallel=1), ref()))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert s.pending == 0
        held.release()
        (await s.acquire(spec(parallel=1), ref())).release()
        await s.close()

    run(main())


@pytest.mark.parametrize(
    "env, field, expected",
    [
        ({}, "keep_alive", 300.0),
        ({"OLLAMA_KEEP_ALIVE": "10m"}, "keep_alive", 600.0),
        ({"OLLAMA_KEEP_ALIVE": "120"}, "keep_alive", 120.0),
        ({"OLLAMA_KEEP_ALIVE": "-1"}, "keep_alive", math.inf),
        ({"OLLAMA_KEEP_ALIVE": "0"}, "keep_alive", 0.0),
        ({"OLLAMA_KEEP_ALIVE": "junk"}, "keep_alive", 300.0),
        ({}, "num_parallel", 4),
        ({"OLLAMA_NUM_PARALLEL": " '2' "}, "num_parallel", 2),
        ({}, "max_queue", 512),
        ({"OLLAMA_MAX_QUEUE": "3"}, "max_queue", 3),
        ({}, "max_loaded_models", 3),
        ({"OLLAMA_MAX_LOADED_MODELS": "1"}, "max_loaded_models", 1),
        ({}, "context_length", 4096),
        ({"OLLAMA_CONTEXT_LENGTH": "8192"}, "context_length", 8192),
        ({}, "flash_attention", None),
        ({"OLLAMA_FLASH_ATTENTION": "1"}, "flash_attention", True),
        ({"OLLAMA_FLASH_ATTENTION": "false"}, "flash_attention", False),
        ({}, "load_timeout", 300.0),
        ({"OLLAMA_LOAD_TIMEOUT": "30s"}, "load_timeout", 30.0),
        ({"OLLAMA_LOAD_TIMEOUT": "0"}, "load_timeout", None),
    ],
)
def test_settings_from_env(env, field, expected):
    assert getattr(settings_from_env(env), field) == expected


def test_a_request_arriving_as_the_keep_alive_fires_gets_a_live_runner():
    async def main():
        s, st = make()
        (await s.acquire(spec(), ref(), keep_alive=0.0)).release()  # unload scheduled, not yet run
        lease = await s.acquire(spec(), ref())
        for _ in range(5):
            await asyncio.sleep(0)
        assert st.started[0].closed and lease.runner is st.started[1] and not lease.runner.closed
        lease.release()
        await s.close()

    run(main())
