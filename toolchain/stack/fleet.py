"""Applying a stack to several servers: in the stack's order, N at a time, pulls relayed between replicas.

`apply_targets(plans, targets, parallel=1, ...)` applies one target after another, in the order the
stack lists them, and stops at the first failure: the targets after it are not touched, so they keep
serving the old state. `parallel=N` applies N targets at once; a failure stops the scheduling of new
targets while the ones in flight finish (on Ctrl-C they stop before their next change).

A model the stack pulls (`pull:`) is fetched from its registry once, by the first target (in the
stack's order) whose plan pulls it: its *origin*. Every other target that needs it pulls it from the
origin's own registry endpoints (`/v2/`, served by every `stack serve` from its store), by manifest
digest, so each replica holds the same manifest bytes (one digest everywhere, the one `stack lock`
pins). Because a `stack serve` registry serves the models of the default host only, the origin gets
a short-lived alias `corral-fleet-<run>/<model>:<tag>` (a copy: the same manifest bytes, no blob
copied); the target pulls `<origin host:port>/corral-fleet-<run>/<model>:<tag>@<digest>` (plain HTTP
when the origin's URL is http), then copies it to the stack's name and deletes the host-named one.
Aliases are deleted when the apply ends.

A relay needs both servers to offer the registry API: each is asked `GET /v2/` once, and only an
answer carrying `Docker-Distribution-API-Version: registry/2.0` counts (a real Ollama answers 404).
Otherwise, and when a relayed pull fails (the target cannot reach the origin's address, or has no
credentials for it: a target authenticates to another registry with the token its own server finds
for that host in `CORRAL_REGISTRY_AUTH`), the target pulls from the registry as a single server
would, and says so.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping, Optional, Sequence, TextIO
from urllib.parse import urlsplit

from toolchain.client import Client
from toolchain.errors import APIError, CorralError
from toolchain.names import parse_name
from toolchain.stack import actual
from toolchain.stack.apply import ApplyResult, PullFn, apply_plan, registry_pull, show_pull
from toolchain.stack.plan import Change, Plan
from toolchain.stack.state import key_of
from toolchain.stack.targets import Target

Echo = Callable[[str], None]

ALIAS_NAMESPACE = "corral-fleet"
REGISTRY_HEADER = "docker-distribution-api-version"


# -- relaying pulled models between replicas ---------------------------------------------------


@dataclass
class _Origin:
    """The first target that pulls a model, and what it got."""

    target: Target
    ready: threading.Event = field(default_factory=threading.Event)
    digest: Optional[str] = None  # the manifest digest the origin holds, once it pulled the model
    alias: Optional[str] = None  # its registry name on the origin, once made
    alias_failed: Optional[str] = None


class Relay:
    """Where each pulled model comes from during one apply (thread-safe).

    `puller(name)` is the pull function for target `name` (`apply_plan(pull=...)`); `done(name)`
    must be called when that target's apply ends, however it ends; `close(echo)` deletes the
    aliases.
    """

    def __init__(self, plans: Sequence[Plan], targets: Mapping[str, Target], *, echo: Echo = print,
                 run_id: Optional[str] = None) -> None:
        self.echo = echo
        self.run_id = run_id or secrets.token_hex(4)
        self.origins: dict[str, _Origin] = {}
        for plan in plans:
            for change in plan.pending:
                if change.action == "pull":
                    self.origins.setdefault(key_of(change.model), _Origin(targets[plan.target]))
        self._lock = threading.Lock()
        self._registry: dict[str, Optional[str]] = {}  # url -> why it cannot serve as a registry
        self._aliases: set[str] = set()

    def puller(self, target: str) -> PullFn:
        return lambda change, client, progress: self.pull(target, change, client, progress)

    def done(self, target: str) -> None:
        """The target's apply ended: models it was to pull and did not are not coming from it."""
        for origin in self.origins.values():
            if origin.target.name == target:
                origin.ready.set()

    def pull(self, target: str, change: Change, client: Client, progress: Optional[TextIO]) -> None:
        origin = self.origins.get(key_of(change.model))
        if origin is None or origin.target.name == target:
            registry_pull(change, client, progress)
            if origin is not None:
                origin.digest = _digest_on(client, change.model)
                origin.ready.set()
            return
        # The origin comes earlier in the stack's order, so it has started; `done` marks it ready
        # whichever way its apply ends.
        origin.ready.wait()
        why = self._why_not(origin, client)
        if why is not None:
            self.echo(f"[{target}]   from its registry: {why}")
            registry_pull(change, client, progress)
            return
        source = f"{origin.target.name} ({origin.target.url})"
        self.echo(f"[{target}]   from {source}")
        try:
            self._relay(origin, change, client, progress)
        except _RelayFailed as exc:
            self.echo(f"[{target}]   could not pull {change.model} from {source}: {exc}; pulling it from its registry instead")
            registry_pull(change, client, progress)

    def _why_not(self, origin: _Origin, client: Client) -> Optional[str]:
        """None when `client`'s server can pull the model from the origin; else why not."""
        if origin.digest is None:
            return f"{origin.target.name} did not pull it"
        if urlsplit(origin.target.url).path.strip("/"):
            return f"{origin.target.name}'s URL has a path; a registry is reached at a host's root"
        problem = self._probe(origin.target.url, origin.target.client)
        if problem is not None:
            return f"{origin.target.name} {problem}"
        problem = self._probe(client.url, lambda: contextlib.nullcontext(client))
        if problem is not None:
            return f"this server {problem}"
        return None

    def _probe(self, url: str, connect: Callable[[], ContextManager[Client]]) -> Optional[str]:
        """Why the server at `url` cannot serve as a registry (None: it can); asked once per apply."""
        with self._lock:
            if url not in self._registry:
                with connect() as client:
                    self._registry[url] = _registry_problem(client)
            return self._registry[url]

    def _relay(self, origin: _Origin, change: Change, client: Client, progress: Optional[TextIO]) -> None:
        alias = self._alias(origin, change.model)
        host = urlsplit(origin.target.url).netloc
        temporary = f"{host}/{alias}"
        try:
            show_pull(client.pull(f"{temporary}@{origin.digest}", insecure=origin.target.url.startswith("http:")), progress)
        except CorralError as exc:
            _forget(client, temporary)
            raise _RelayFailed(str(exc)) from None
        try:  # the stack's name for it: a copy is the same manifest bytes
            client.copy(temporary, change.model)
        finally:
            _forget(client, temporary)
        got = _digest_on(client, change.model)
        if got != origin.digest:
            raise CorralError(f"{change.model}: pulled {origin.digest} from {origin.target.name}, but the server lists {got}")

    def _alias(self, origin: _Origin, model: str) -> str:
        """The origin's name for `model` under the default host (made once per model)."""
        with self._lock:
            if origin.alias is not None:
                return origin.alias
            if origin.alias_failed is not None:
                raise _RelayFailed(origin.alias_failed)
            alias = alias_name(model, self.run_id, self._aliases)
            try:
                with origin.target.client() as source:
                    source.copy(model, alias)
            except CorralError as exc:
                origin.alias_failed = f"could not name it on {origin.target.name}: {exc}"
                raise _RelayFailed(origin.alias_failed) from None
            self._aliases.add(alias)
            origin.alias = alias
            return alias

    def close(self, warn: Echo) -> None:
        """Delete the aliases made on the origins."""
        for origin in self.origins.values():
            if origin.alias is None:
                continue
            try:
                with origin.target.client() as source:
                    source.delete(origin.alias)
            except CorralError as exc:
                warn(f"{origin.target.name}: could not delete the temporary model {origin.alias}: {exc}")
            origin.alias = None


def alias_name(model: str, run_id: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`corral-fleet-<run_id>/<model>:<tag>`, numbered (`<model>-2`) when two models share model and tag."""
    n = parse_name(model)
    for i in range(1, len(taken) + 2):
        part = n.model.casefold() if i == 1 else f"{n.model.casefold()}-{i}"
        alias = f"{ALIAS_NAMESPACE}-{run_id}/{part}:{n.tag}"
        if alias not in taken:
            return alias
    raise AssertionError("unreachable: one of len(taken)+1 candidates is free")


class _RelayFailed(CorralError):
    """A relayed pull did not happen (nothing changed on the target); the registry is the fallback."""


def _registry_problem(client: Client) -> Optional[str]:
    """None when the server answers the registry API (`GET /v2/`), else what it does instead."""
    try:
        response = client.request("GET", "/v2/")
    except APIError as exc:
        if exc.status in (404, 405):
            return "has no registry endpoints (not a stack serve)"
        return f"answered {exc.status} on /v2/: {exc.message}"
    except CorralError as exc:
        return str(exc)
    if response.headers.get(REGISTRY_HEADER, "").strip() != "registry/2.0":
        return "does not answer /v2/ as a registry"
    return None


def _digest_on(client: Client, model: str) -> Optional[str]:
    states, _ = actual.read(client)
    state = states.get(key_of(model))
    return state.digest if state is not None else None


def _forget(client: Client, model: str) -> None:
    try:
        client.delete(model)
    except CorralError:
        pass  # absent (the pull failed early) or unreachable: nothing more to do here


# -- the order and the parallelism ------------------------------------------------------------


@dataclass
class Outcome:
    """How far an apply over several targets got."""

    results: list[ApplyResult]
    failed: list[tuple[str, BaseException]] = field(default_factory=list)  # (target, error), in stack order
    not_started: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(len(r.done) for r in self.results)


class _Prefixed:
    """A text stream that writes each line as `[target] line` to `out`, whole lines at a time."""

    def __init__(self, target: str, out: TextIO, lock: threading.Lock) -> None:
        self.prefix, self.out, self.lock, self.buffer = f"[{target}] ", out, lock, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        if lines:
            with self.lock:
                self.out.write("".join(self.prefix + line.strip("\r") + "\n" for line in lines))
                self.out.flush()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False  # several targets at once: plain status lines, no bars


def apply_targets(plans: Sequence[Plan], targets: Mapping[str, Target], *, parallel: int = 1,
                  echo: Echo = print, warn: Echo = print, saved: bool = False, lock_timeout: float = 0.0,
                  progress: Optional[TextIO] = None, outcome: Optional[Outcome] = None) -> Outcome:
    """Apply each plan to its target, in order, `parallel` at a time; stop at the first failure.

    KeyboardInterrupt propagates once the targets in flight stopped; pass `outcome` to see how
    far each got then.
    """
    if parallel < 1:
        raise CorralError("--parallel must be at least 1")
    relay = Relay(plans, targets, echo=echo)
    outcome = outcome if outcome is not None else Outcome([ApplyResult(p.target) for p in plans])
    stop = threading.Event()
    lock = threading.Lock()
    stream = progress if progress is not None else sys.stderr

    def run(i: int) -> None:
        plan, result = plans[i], outcome.results[i]
        shown = progress if parallel == 1 or progress is None else _Prefixed(plan.target, stream, lock)
        try:
            with targets[plan.target].client() as client:
                apply_plan(plan, client, echo=echo, saved=saved, lock_timeout=lock_timeout, progress=shown,
                           result=result, pull=relay.puller(plan.target), stop=stop)
        finally:
            relay.done(plan.target)
        for warning in result.warnings:
            warn(warning)

    try:
        if parallel == 1:
            for i, plan in enumerate(plans):
                try:
                    run(i)
                except CorralError as exc:
                    outcome.failed.append((plan.target, exc))
                    outcome.not_started = [p.target for p in plans[i + 1:]]
                    break
        else:
            _run_parallel(plans, run, parallel, stop, outcome)
    finally:
        relay.close(warn)
    return outcome


def _run_parallel(plans: Sequence[Plan], run: Callable[[int], None], parallel: int,
                  stop: threading.Event, outcome: Outcome) -> None:
    queue = list(range(len(plans)))
    running: dict[Future, int] = {}
    interrupted = False
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="corral-apply") as pool:
        while queue or running:
            while queue and len(running) < parallel and not outcome.failed and not interrupted:
                i = queue.pop(0)
                running[pool.submit(run, i)] = i
            if not running:
                break
            try:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # the targets in flight stop before their next change
                interrupted = True
                stop.set()
                continue
            for future in finished:
                i = running.pop(future)
                exc = future.exception()
                if isinstance(exc, KeyboardInterrupt):
                    interrupted = True
                elif exc is not None:
                    outcome.failed.append((plans[i].target, exc))
    outcome.failed.sort(key=lambda f: [p.target for p in plans].index(f[0]))
    outcome.not_started = [plans[i].target for i in queue]
    if interrupted:
        raise KeyboardInterrupt
