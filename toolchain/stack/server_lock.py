"""The server-side apply lock (`/api/corral/lock` of `stack serve`), held as a renewed lease.

`server_lock(client, timeout, notify)` takes the lock, renews the lease from a small daemon thread
every TTL/3 seconds while the apply runs, and releases it on the way out — also on Ctrl-C or a
failure (a killed apply's lease simply expires after TTL seconds). It yields a `Held` whose
`check()` raises if the lease was lost (renewals failed until it expired), so apply stops before
its next step instead of running unlocked. A server without the route (a real Ollama answers 404)
yields `None`: the caller relies on the client-side lock file alone.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import threading
import time
from typing import Callable, Iterator, Optional

from toolchain.client import Client
from toolchain.errors import APIError, CorralError

#: Seconds a lease lasts without renewal: how long a crashed apply can keep others out.
TTL = 60.0
POLL = 0.5

Echo = Callable[[str], None]


class LockedError(CorralError):
    """Another apply holds the lock for the server."""


def offers_lock(exc: APIError) -> bool:
    """Whether a failed lock request means the server has a lock (False: it has no such route)."""
    return exc.status not in (404, 405)


def owner() -> str:
    """Who takes the lock, as others will see it: `CORRAL_LOCK_OWNER`, else user@host pid N."""
    given = os.environ.get("CORRAL_LOCK_OWNER", "").strip()
    if given:
        return given[:200]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class Held:
    """A lease this process holds; renewed by `_renew_loop` until `stop()`."""

    def __init__(self, client: Client, lease: dict, ttl: float) -> None:
        self.client, self.id, self.ttl = client, str(lease["id"]), ttl
        self.expires = time.monotonic() + ttl
        self.lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="corral-lock-renew", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.client.lock_renew(self.id, self.ttl)
                self.expires = time.monotonic() + self.ttl
            except APIError as exc:
                if exc.status == 404:  # expired (or released by someone with the id): gone for good
                    self.lost = f"the apply lock on {self.client.url} expired and was not renewed"
                    return
            except CorralError:  # unreachable for now, or a server error
                pass  # try again at the next tick; the lease lasts TTL
            if time.monotonic() >= self.expires:
                self.lost = f"the apply lock on {self.client.url} could not be renewed before it expired"
                return

    def check(self) -> None:
        if self.lost is not None:
            raise LockedError(f"{self.lost}; stopped before the next change; run `stack plan` to see what remains")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with contextlib.suppress(CorralError):
            self.client.lock_release(self.id)


def pause(seconds: float, stop: Optional[threading.Event] = None) -> None:
    """Sleep between two tries for a lock; KeyboardInterrupt at once when `stop` is set."""
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise KeyboardInterrupt


@contextlib.contextmanager
def server_lock(client: Client, timeout: float = 0.0, notify: Optional[Echo] = None,
                ttl: float = TTL, stop: Optional[threading.Event] = None) -> Iterator[Optional[Held]]:
    """Hold the server's apply lock for the block; wait up to `timeout` seconds for it.

    Yields None when the server offers no lock (404/405 on the route). Other errors (401, 403,
    an unreachable server) are raised: an apply could not go on there anyway. Setting `stop`
    ends the wait with KeyboardInterrupt (Ctrl-C while other threads wait).
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    lease: Optional[dict] = None
    while lease is None:
        try:
            lease = client.lock_acquire(owner(), ttl)
        except APIError as exc:
            if not offers_lock(exc):
                break
            if exc.status != 409:
                raise CorralError(f"cannot take the apply lock on {client.url}: {exc.message}") from None
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another stack apply is running against {client.url}: {exc.message}; "
                    "wait for it to finish, then run `stack plan` again"
                ) from None
            if notify is not None:
                notify(f"waiting for another stack apply against {client.url}: {exc.message} (up to {timeout:g}s) ...")
                notify = None
            pause(POLL, stop)
    if lease is None:
        yield None
        return
    held = Held(client, lease, ttl)
    try:
        yield held
    finally:
        held.stop()
