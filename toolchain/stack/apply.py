"""Performing a plan through the public API, one target at a time, under an apply lock.

Order: pulls, creates, updates and replaces in the plan's order (bases before the models built
from them), deletes last, then preloads. Every step is one server call that swaps a manifest
atomically (`/api/create` and `/api/pull` write the new manifest only when the model is complete;
`/api/delete` removes it), so an interruption leaves each model either old or new, and the next
plan shows what remains. A replace is performed as one create over the old model, never as a
delete followed by a create.

Saved plans are applied only against the server state they were made for (`StalePlanError`).
Two applies against the same server exclude each other: first through the server's apply lock
where it offers one (`toolchain.stack.server_lock`, a renewed lease: covers applies from any
machine), then through a lock file on this machine (`apply_lock`: the only lock for servers
without one, such as a real Ollama; it also keeps out applies by clients that predate the server
lock). `--lock-timeout` is one budget for both.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, TextIO

from toolchain.client import Client
from toolchain.errors import CorralError
from toolchain.stack import actual
from toolchain.stack.plan import Change, Plan
from toolchain.stack.server_lock import LockedError, pause, server_lock

Echo = Callable[[str], None]
#: How a pull is performed: `registry_pull` (from the model's registry), or a fleet's relay between
#: replicas (`toolchain.stack.fleet`).
PullFn = Callable[[Change, Client, Optional[TextIO]], None]


class StalePlanError(CorralError):
    """The server changed since the saved plan was made."""


@dataclass
class ApplyResult:
    target: str
    done: list[Change] = field(default_factory=list)
    preloaded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def apply_plan(plan: Plan, client: Client, *, echo: Echo = print, saved: bool = False,
               lock_timeout: float = 0.0, progress: Optional[TextIO] = None,
               result: Optional[ApplyResult] = None, pull: Optional[PullFn] = None,
               stop: Optional[threading.Event] = None) -> ApplyResult:
    """Make `client`'s server match `plan`. Raises on the first failure (earlier steps stay done).

    The server's fingerprint is checked under the lock, so a plan made before another apply
    (or any other change) finished is refused rather than applied over it. Pass `result` to
    see how far an interrupted apply got. `pull` performs the pulls (default `registry_pull`);
    once `stop` is set, the apply raises KeyboardInterrupt before its next change (Ctrl-C
    while other threads apply).
    """
    result = result if result is not None else ApplyResult(plan.target)
    deadline = time.monotonic() + max(lock_timeout, 0.0)
    with server_lock(client, timeout=lock_timeout, notify=echo, stop=stop) as held, \
            apply_lock(client.url, timeout=max(deadline - time.monotonic(), 0.0), notify=echo, stop=stop):
        _, now = actual.read(client)
        if now != plan.fingerprint:
            what = "saved plan" if saved else "plan"
            raise StalePlanError(
                f"{what} is stale: the models on {plan.target} ({plan.url}) changed since the plan was made; "
                "nothing was applied; run `stack plan` again"
            )
        steps = [c for c in plan.pending if c.action != "delete"] + [c for c in plan.pending if c.action == "delete"]
        for n, change in enumerate(steps, 1):
            if held is not None:
                held.check()  # never go on once the server lease is lost
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            echo(f"[{plan.target}] {n}/{len(steps)} {_verb(change.action)} {change.model} ...")
            try:
                perform(change, client, progress=progress, pull=pull)
            except CorralError as exc:
                raise CorralError(
                    f"{plan.target}: {_verb(change.action)} {change.model} failed: {exc} "
                    f"({n - 1} of {len(steps)} changes made; every model is either old or new; "
                    "run `stack plan` to see what remains)"
                ) from exc
            result.done.append(change)
        for change in plan.changes:
            d = change.desired
            if d is not None and d.preload:
                echo(f"[{plan.target}] preloading {change.model} ...")
                try:
                    preload(client, change.model, d.keep_alive)
                except CorralError as exc:  # the model is in place; loading it is best effort
                    result.warnings.append(f"{plan.target}: could not preload {change.model}: {exc}")
                    continue
                result.preloaded.append(change.model)
    return result


def perform(change: Change, client: Client, *, progress: Optional[TextIO] = None,
            pull: Optional[PullFn] = None) -> None:
    d = change.desired
    if change.action == "delete":
        client.delete(change.model)
        return
    if d is None:
        raise CorralError(f"{change.model}: the plan has no desired state for a {change.action}")
    if change.action == "pull":
        (pull or registry_pull)(change, client, progress)
    elif change.action in ("create", "update", "replace"):
        for upload in d.uploads:
            _upload(client, upload.digest, upload.path, upload.size, progress)
        body = {"model": change.model, **dict(d.create or {}), "stream": True}
        last: dict[str, Any] = {}
        for last in client.create(body):
            pass
        if last.get("status") != "success":
            raise CorralError(f"{change.model}: create ended without success (last status: {last.get('status')!r})")
    else:
        raise CorralError(f"{change.model}: unknown action {change.action!r}")


def preload(client: Client, model: str, keep_alive: Any = None) -> None:
    """Load a model into memory: a generate request without a prompt."""
    body: dict[str, Any] = {"model": model}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    for _ in client.generate(body):
        pass


def _upload(client: Client, digest: str, path: str, size: int, progress: Optional[TextIO]) -> None:
    if client.has_blob(digest):
        return
    if not os.path.isfile(path):
        raise CorralError(f"{path}: the file to upload is missing (was the plan made on another machine?)")
    if os.path.getsize(path) != size:
        raise CorralError(f"{path} changed since the plan was made (size differs); run `stack plan` again")
    if progress is not None:
        progress.write(f"  uploading {os.path.basename(path)} ({size / 1e6:.1f} MB)\n")
    with open(path, "rb") as f:
        client.create_blob(digest, _chunks(f))


def _chunks(f: Any) -> Iterator[bytes]:
    while chunk := f.read(1 << 20):
        yield chunk


def registry_pull(change: Change, client: Client, progress: Optional[TextIO] = None) -> None:
    """Pull a model of the stack from its registry (`pull:`), checking its pin before and after."""
    d = change.desired
    assert d is not None  # perform() checked
    _pull(client, change.model, d.pull or change.model, d.pin, d.insecure, progress)


def _pull(client: Client, model: str, ref: str, pin: Optional[str], insecure: bool, progress: Optional[TextIO]) -> None:
    from toolchain.stack.pin import check_pin

    check_pin(ref, pin, insecure)  # the server pulls by name: make sure the name still means the pin
    show_pull(client.pull(ref, insecure=insecure), progress)
    if pin:
        states, _ = actual.read(client)
        got = next((s.digest for s in states.values() if s.name.casefold() == model.casefold()), None)
        if got != pin:
            raise CorralError(
                f"{model}: the registry served {got} for {ref}, but the stack pins {pin}; "
                "the pinned version is no longer available under this reference"
            )


def show_pull(messages: Iterator[dict[str, Any]], progress: Optional[TextIO]) -> None:
    """Consume a pull's progress messages; show them on `progress` as `stack pull` does."""
    if progress is None:
        for _ in messages:
            pass
    else:  # a bar per blob on a terminal, plain status lines otherwise (as `stack pull`)
        from rich.console import Console

        from toolchain.progress import show_progress

        show_progress(messages, Console(file=progress))


def _verb(action: str) -> str:
    return {"create": "creating", "update": "updating", "replace": "replacing", "pull": "pulling", "delete": "deleting"}[action]


# -- the client-side apply lock ---------------------------------------------------------------


def lock_path(url: str) -> str:
    folder = os.environ.get("CORRAL_LOCK_DIR") or tempfile.gettempdir()
    return os.path.join(folder, f"corral-apply-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock")


@contextlib.contextmanager
def apply_lock(url: str, timeout: float = 0.0, notify: Optional[Echo] = None,
               stop: Optional[threading.Event] = None) -> Iterator[None]:
    """Exclusive per-server lock for this machine's users; waits up to `timeout` seconds.

    The operating system drops the lock when the holder exits, so a killed apply never
    leaves a stale lock behind. Setting `stop` ends the wait with KeyboardInterrupt.
    """
    import fcntl

    path = lock_path(url)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_holder(fd)
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"another stack apply is running against {url}{holder}; "
                        "wait for it to finish, then run `stack plan` again"
                    ) from None
                if notify is not None:
                    notify(f"waiting for another stack apply against {url}{holder} (up to {timeout:g}s) ...")
                    notify = None
                pause(0.2, stop)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        return ""
    return f" (pid {text[0]}, since {text[1]})" if len(text) >= 2 else ""
