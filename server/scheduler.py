"""The scheduler: the one place that decides when a model's runner loads and unloads.

It keeps a model → runner map and gives requests a `Lease` on a runner slot:

- A loaded runner whose load-time settings (the runner's `LoadSpec`) match is reused at once; a different
  spec (say a new `num_ctx`) retires the old runner when it drains and loads a new one.
- Each runner has `num_parallel` slots; a request waits for a free slot. Every request that has
  to wait, for a load or for a slot, counts against `max_queue`; beyond it the request fails
  with 503 at once (Ollama's `ErrMaxQueue`; unlike Ollama, a wait for a slot of an already
  loaded model is bounded too, ollama/ollama#7758).
- Loads are serialised. Before loading, room is made: while `max_loaded_models` runners are
  loaded, or the new model does not fit in available memory, the least recently used idle
  runner is unloaded (if none is idle, the least recently used one is waited for).
- keep_alive: when a runner's last request ends, a timer unloads it after its keep-alive
  (0 = at once, `FOREVER` = never). A request's keep_alive, when given, replaces the runner's.
- A runner found dead (crashed) is dropped, and the next request loads a new one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Protocol

log = logging.getLogger(__name__)

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
DEFAULT_KEEP_ALIVE = 300.0


class SchedulerError(Exception):
    """A scheduling failure with an HTTP status (503 queue full, 500 load failures)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class QueueFull(SchedulerError):
    def __init__(self) -> None:
        super().__init__(QUEUE_FULL, 503)


class RunnerLike(Protocol):
    """What the scheduler needs from a runner (server.runner.client.Runner)."""

    @property
    def alive(self) -> bool: ...

    async def close(self) -> None: ...


# A spec is the runner's `server.runner.types.LoadSpec` (frozen, comparable): the scheduler only
# reads its `model_path`, `adapters`, `num_parallel` and `num_ctx`, and compares specs for equality.
LoadSpec = Any


def _key(spec: Any) -> tuple[Any, ...]:
    """Runners are keyed by model file and adapters, as Ollama keys by model path."""
    return (spec.model_path, tuple(spec.adapters))


@dataclass(frozen=True)
class ModelRef:
    """What `/api/ps` shows about a loaded model."""

    name: str
    digest: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    size: int = 0


@dataclass
class Settings:
    keep_alive: float = DEFAULT_KEEP_ALIVE
    max_loaded_models: int = 3
    num_parallel: int = 4
    max_queue: int = 512
    load_timeout: Optional[float] = 300.0
    context_length: int = 4096
    flash_attention: Optional[bool] = None  # None: llama.cpp's auto choice


class _Entry:
    def __init__(self, spec: LoadSpec, ref: ModelRef, runner: Any, keep_alive: float, load_seconds: float) -> None:
        self.spec = spec
        self.ref = ref
        self.runner = runner
        self.keep_alive = keep_alive
        self.load_seconds = load_seconds
        self.slots = asyncio.Semaphore(spec.num_parallel)
        self.refcount = 0
        self.busy = 0  # leases holding a slot (server.observe reports it)
        self.idle = asyncio.Event()
        self.idle.set()
        self.last_used = time.monotonic()
        self.expires_wall = time.time() + keep_alive if math.isfinite(keep_alive) else math.inf
        self.timer: Optional[asyncio.TimerHandle] = None
        self.retiring = False
        self.closed = False

    def usable_for(self, spec: LoadSpec) -> bool:
        return _same(self.spec, spec) and not self.retiring and not self.closed and _alive(self.runner)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _same(a: Any, b: Any) -> bool:
    """Equal load-time settings; a spec's display `name` is not one of them."""
    if dataclasses.is_dataclass(a) and any(f.name == "name" for f in dataclasses.fields(a)):
        a, b = dataclasses.replace(a, name=""), dataclasses.replace(b, name="")
    return a == b


def _alive(runner: Any) -> bool:
    try:
        return bool(runner.alive)
    except Exception:  # noqa: BLE001 - a runner that cannot say is not alive
        return False


class Lease:
    """A request's hold on one slot of a runner; `release()` exactly once (idempotent)."""

    def __init__(self, scheduler: "Scheduler", entry: _Entry, load_seconds: float) -> None:
        self._scheduler = scheduler
        self._entry = entry
        self.runner = entry.runner
        self.load_seconds = load_seconds
        self._released = False
        entry.busy += 1

    @property
    def num_ctx(self) -> int:
        return self._entry.spec.num_ctx

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._scheduler._release(self._entry)

    def runner_failed(self) -> None:
        """The runner broke during this request: drop it so the next request reloads."""
        self._scheduler._drop(self._entry)
        self.release()


StartRunner = Callable[[LoadSpec, Optional[float]], Awaitable[Any]]


def available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes (a large number where it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


class Scheduler:
    """Owns every loaded runner. All methods run on the server's event loop."""

    def __init__(
        self,
        settings: Settings,
        start_runner: StartRunner,
        *,
        memory: Callable[[], int] = available_memory,
    ) -> None:
        self.settings = settings
        self._start_runner = start_runner
        self._memory = memory
        self._loaded: dict[str, _Entry] = {}
        self._load_lock = asyncio.Lock()
        self._waiting: Counter[str] = Counter()  # pending requests by model name
        self._closing: set[asyncio.Task[None]] = set()

    # -- requests ----------------------------------------------------------------------

    async def acquire(self, spec: LoadSpec, ref: ModelRef, keep_alive: Optional[float] = None) -> Lease:
        """A slot on a runner for `spec`, loading it first if needed.

        `keep_alive` (seconds, `math.inf` = forever, None = keep the runner's current one or
        the server default) becomes the runner's keep-alive. Raises `QueueFull` when the
        request would have to wait and `max_queue` requests already do.
        """
        entry = self._loaded.get(_key(spec))
        if entry is not None and entry.usable_for(spec) and not entry.slots.locked():
            await entry.slots.acquire()  # a free slot: returns without suspending
            self._use(entry, keep_alive)
            return Lease(self, entry, 0.0)
        if self.pending >= self.settings.max_queue:
            raise QueueFull()
        self._waiting[ref.name] += 1
        started = time.monotonic()
        try:
            while True:
                entry = self._loaded.get(_key(spec))
                if entry is not None and entry.usable_for(spec):
                    return await self._attach_waiting(entry, keep_alive, time.monotonic() - started)
                async with self._load_lock:
                    entry = self._loaded.get(_key(spec))
                    if entry is not None and entry.usable_for(spec):
                        continue
                    if entry is not None:
                        await self._retire(entry)
                    await self._make_room(spec, ref)
                    await self._load(spec, ref, keep_alive)
        finally:
            self._waiting[ref.name] -= 1
            if not self._waiting[ref.name]:
                del self._waiting[ref.name]

    async def _attach_waiting(self, entry: _Entry, keep_alive: Optional[float], load_seconds: float) -> Lease:
        self._use(entry, keep_alive)
        try:
            await entry.slots.acquire()
        except BaseException:
            self._unuse(entry)
            raise
        if entry.closed:
            entry.slots.release()
            self._unuse(entry)
            raise SchedulerError("model runner was unloaded while waiting; please retry", 500)
        return Lease(self, entry, load_seconds)

    def _use(self, entry: _Entry, keep_alive: Optional[float]) -> None:
        entry.refcount += 1
        entry.idle.clear()
        entry.cancel_timer()
        entry.last_used = time.monotonic()
        if keep_alive is not None:
            entry.keep_alive = keep_alive
        entry.expires_wall = _expiry(entry.keep_alive)

    def _unuse(self, entry: _Entry) -> None:
        entry.refcount -= 1
        entry.last_used = time.monotonic()
        entry.expires_wall = _expiry(entry.keep_alive)
        if entry.refcount > 0:
            return
        entry.idle.set()
        if entry.closed:
            return
        if entry.retiring or entry.keep_alive <= 0 or not _alive(entry.runner):
            self._unload_soon(entry)
        elif math.isfinite(entry.keep_alive):
            loop = asyncio.get_running_loop()
            entry.timer = loop.call_later(entry.keep_alive, self._expired, entry)

    def _release(self, entry: _Entry) -> None:
        entry.busy -= 1
        entry.slots.release()
        self._unuse(entry)

    def _expired(self, entry: _Entry) -> None:
        entry.timer = None
        if entry.refcount == 0 and not entry.closed:
            self._unload_soon(entry)

    def _drop(self, entry: _Entry) -> None:
        """Forget a broken runner now; it is closed once its last request lets go."""
        if self._loaded.get(_key(entry.spec)) is entry:
            del self._loaded[_key(entry.spec)]
        entry.retiring = True

    # -- loading and unloading -------------------------------------------------------------

    async def _load(self, spec: LoadSpec, ref: ModelRef, keep_alive: Optional[float]) -> None:
        started = time.monotonic()
        try:
            runner = await self._start_runner(spec, self.settings.load_timeout)
        except SchedulerError:
            raise
        except Exception as exc:  # noqa: BLE001 - a load failure is the request's error
            log.warning("loading %s failed: %s", ref.name, exc)
            raise SchedulerError(f"error loading model: {exc}", 500) from exc
        ka = self.settings.keep_alive if keep_alive is None else keep_alive
        entry = _Entry(spec, ref, runner, ka, time.monotonic() - started)
        self._loaded[_key(spec)] = entry
        log.info("loaded %s (num_ctx=%d, parallel=%d) in %.2fs", ref.name, spec.num_ctx, spec.num_parallel,
                 entry.load_seconds)

    async def _retire(self, entry: _Entry) -> None:
        """Unload `entry` once its requests are done (called under the load lock)."""
        entry.retiring = True
        entry.cancel_timer()
        await entry.idle.wait()
        await self._close(entry)

    async def _make_room(self, spec: LoadSpec, ref: ModelRef) -> None:
        limit = self.settings.max_loaded_models
        need = ref.size
        while True:
            others = [e for e in self._loaded.values() if not e.closed]
            too_many = limit > 0 and len(others) >= limit
            fits = need <= self._memory()
            if not too_many and fits:
                return
            if not others:
                raise SchedulerError(
                    f"model requires more system memory ({_human(need)}) than is available "
                    f"({_human(self._memory())})", 500)
            idle = [e for e in others if e.refcount == 0]
            victim = min(idle or others, key=lambda e: e.last_used)
            log.info("unloading %s to make room for %s", victim.ref.name, ref.name)
            await self._retire(victim)

    def _unload_soon(self, entry: _Entry) -> None:
        """Unload an idle runner. It leaves the map at once, so a request arriving before the
        process has exited loads a new runner instead of attaching to the closing one."""
        entry.retiring = True
        if self._loaded.get(_key(entry.spec)) is entry:
            del self._loaded[_key(entry.spec)]
        task = asyncio.get_running_loop().create_task(self._close(entry))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, entry: _Entry) -> None:
        if entry.closed:
            return
        entry.closed = True
        entry.cancel_timer()
        if self._loaded.get(_key(entry.spec)) is entry:
            del self._loaded[_key(entry.spec)]
        log.info("unloading %s", entry.ref.name)
        try:
            await entry.runner.close()
        except Exception:  # noqa: BLE001 - an unload never fails a request
            log.warning("closing the runner of %s failed", entry.ref.name, exc_info=True)

    # -- administration ----------------------------------------------------------------------

    def expire(self, model_path: str) -> bool:
        """keep_alive 0 for every runner of `model_path`: unload now, or when its requests end."""
        found = False
        for entry in list(self._loaded.values()):
            if entry.spec.model_path == model_path:
                found = True
                entry.keep_alive = 0.0
                entry.cancel_timer()
                if entry.refcount == 0:
                    self._unload_soon(entry)
        return found

    def loaded(self, model_path: str) -> bool:
        return any(e.spec.model_path == model_path and not e.closed for e in self._loaded.values())

    def running(self) -> list[tuple[ModelRef, LoadSpec, float, Any]]:
        """(ref, spec, expires_at as a Unix time or inf, runner) of every loaded runner,
        longest remaining time first (the order of `/api/ps`)."""
        now = time.time()
        rows = []
        for e in self._loaded.values():
            if e.closed:
                continue
            expires = e.expires_wall if e.refcount == 0 else _expiry(e.keep_alive, now)
            rows.append((e.ref, e.spec, expires, e.runner))
        rows.sort(key=lambda r: r[2], reverse=True)
        return rows

    def busy_slots(self) -> list[tuple[str, int]]:
        """(model name, slots in use) of every loaded runner."""
        return [(e.ref.name, e.busy) for e in self._loaded.values() if not e.closed]

    @property
    def pending(self) -> int:
        return sum(self._waiting.values())

    def queued(self) -> list[tuple[str, int]]:
        """(model name, requests waiting for it: to load or for a slot) of every model with any."""
        return sorted(self._waiting.items())

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        for entry in list(self._loaded.values()):
            await self._close(entry)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


def _expiry(keep_alive: float, now: Optional[float] = None) -> float:
    if not math.isfinite(keep_alive):
        return math.inf
    return (time.time() if now is None else now) + max(keep_alive, 0.0)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def settings_from_config(config: Any) -> Settings:
    """Scheduler settings from `server.config.Config` (where the OLLAMA_* variables are read)."""
    return Settings(
        keep_alive=config.keep_alive,
        max_loaded_models=config.max_loaded_models or 3,
        num_parallel=config.num_parallel or 4,
        max_queue=config.max_queue or 512,
        load_timeout=config.load_timeout,
        context_length=config.context_length or 4096,
        flash_attention=getattr(config, "flash_attention", None),
    )


def settings_from_env(env: Optional[dict[str, str]] = None) -> Settings:
    from server.config import Config

    return settings_from_config(Config.from_env(env))
