"""The apply lock `stack apply` takes on a server: one holder at a time, held as a TTL lease.

    POST   /api/corral/lock        {"owner": "alice@ci pid 12", "ttl": 60}
           → 200 {"id", "owner", "since", "expires_at", "ttl"}
           → 409 {"error": "locked by <owner> since <time> (expires <time>)"}
    PUT    /api/corral/lock/{id}   {"ttl": 60}  renews the lease → 200 (as POST) | 404
    DELETE /api/corral/lock/{id}   releases it → 200 {} | 404
    GET    /api/corral/lock        → 200 {"locked": false} | {"locked": true, "owner", "since", "expires_at"}

A lease ends `ttl` seconds after it was taken or last renewed, so an apply that crashed (or lost
its network) never locks the server for longer than its TTL. The lease id is the only way to renew
or release a lease; `GET` shows who holds the lock but never the id. The lease lives in the model
store (`.corral-apply-lock`, mode 0600): a server restarted under an apply still holds it for that
apply (which renews it and goes on), and servers sharing one store share one lock, as they share
the models an apply changes. Which keys may call these routes is
decided in `server.auth` (admin). Errors use Ollama's `{"error": ...}` shape; a bad body is a 400
naming the field.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from server.api_types import json_object

PATH = "/api/corral/lock"
MIN_TTL, MAX_TTL = 1, 3600
MAX_OWNER = 200

router = APIRouter()


@dataclass
class Lease:
    id: str
    owner: str
    since: float
    expires: float
    ttl: float

    def public(self) -> dict[str, Any]:
        return {"owner": self.owner, "since": _stamp(self.since), "expires_at": _stamp(self.expires)}

    def private(self) -> dict[str, Any]:
        return {"id": self.id, **self.public(), "ttl": self.ttl}


class ApplyLock:
    """One lease at most, kept in the file `path` (JSON) so that a restarted server, and any other
    server sharing the model store, sees it. Each call reads, decides and writes under a `flock`.
    `clock` is wall time (seconds) so expiry times can be shown to people (and survive a restart)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock

    def holder(self) -> Optional[Lease]:
        return self._transact(lambda held, now: (held, held))

    def acquire(self, owner: str, ttl: float) -> tuple[Optional[Lease], Optional[Lease]]:
        """(the new lease, None) or (None, the lease that holds the lock)."""

        def step(held: Optional[Lease], now: float) -> tuple[Optional[Lease], Any]:
            if held is not None:
                return held, (None, held)
            lease = Lease(secrets.token_urlsafe(16), owner, now, now + ttl, ttl)
            return lease, (lease, None)

        return self._transact(step)

    def renew(self, lease_id: str, ttl: Optional[float]) -> Optional[Lease]:
        def step(held: Optional[Lease], now: float) -> tuple[Optional[Lease], Any]:
            if not _owns(held, lease_id):
                return held, None
            assert held is not None
            ttl_ = ttl if ttl is not None else held.ttl
            renewed = dataclasses.replace(held, ttl=ttl_, expires=now + ttl_)
            return renewed, renewed

        return self._transact(step)

    def release(self, lease_id: str) -> bool:
        return self._transact(lambda held, now: (None, True) if _owns(held, lease_id) else (held, False))

    def _transact(self, step: Callable[[Optional[Lease], float], tuple[Optional[Lease], Any]]) -> Any:
        """Run `step(current lease or None, now) -> (lease to keep, result)` on the file's state."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "r+b") as f:
            # Each call opens the file anew, so the flock also serialises this process's threads;
            # it is released when the file is closed.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            now = self._clock()
            held = _load(f.read(64 * 1024), now)
            keep, result = step(held, now)
            if keep != held:
                f.seek(0)
                f.truncate()
                f.write(json.dumps(dataclasses.asdict(keep)).encode() if keep else b"")
                f.flush()
                os.fsync(f.fileno())
            return result


def _owns(held: Optional[Lease], lease_id: str) -> bool:
    return held is not None and secrets.compare_digest(held.id, lease_id)


def _load(raw: bytes, now: float) -> Optional[Lease]:
    """The lease a lock file holds; None when it is empty, unreadable (a torn write) or expired."""
    try:
        lease = Lease(**json.loads(raw))
    except (ValueError, TypeError, RecursionError):
        return None
    texts, times = (lease.id, lease.owner), (lease.since, lease.expires, lease.ttl)
    if not all(isinstance(v, str) for v in texts) or not all(type(v) in (int, float) for v in times):
        return None
    return lease if lease.expires > now else None  # expired: as if released


#: The lock's file in the model store (beside `.corral-store.lock`).
LOCK_FILE = ".corral-apply-lock"


def install(app: FastAPI) -> None:
    app.state.apply_lock = ApplyLock(app.state.store.root / LOCK_FILE)
    app.include_router(router)


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _ttl(body: dict[str, Any], required: bool) -> float | None | JSONResponse:
    ttl = body.get("ttl")
    if ttl is None:
        return _error(400, "ttl is required (seconds the lease lasts)") if required else None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not MIN_TTL <= ttl <= MAX_TTL:
        return _error(400, f"ttl must be a number of seconds from {MIN_TTL} to {MAX_TTL}")
    return float(ttl)


def _lock(request: Request) -> ApplyLock:
    return request.app.state.apply_lock


@router.get(PATH)
async def show(request: Request) -> JSONResponse:
    held = _lock(request).holder()
    return JSONResponse({"locked": True, **held.public()} if held else {"locked": False})


@router.post(PATH)
async def acquire(request: Request) -> JSONResponse:
    body = json_object(await request.body())
    owner = body.get("owner")
    if not isinstance(owner, str) or not owner.strip():
        return _error(400, "owner is required (who takes the lock, shown to others)")
    if len(owner) > MAX_OWNER or any(ord(c) < 32 for c in owner):
        return _error(400, f"owner must be one line of at most {MAX_OWNER} characters")
    ttl = _ttl(body, required=True)
    if isinstance(ttl, JSONResponse):
        return ttl
    assert ttl is not None
    lease, held = _lock(request).acquire(owner.strip(), ttl)
    if lease is None:
        assert held is not None
        return _error(409, f"locked by {held.owner} since {_stamp(held.since)} (expires {_stamp(held.expires)})")
    return JSONResponse(lease.private())


@router.put(PATH + "/{lease_id}")
async def renew(lease_id: str, request: Request) -> JSONResponse:
    body = json_object(await request.body())
    ttl = _ttl(body, required=False)
    if isinstance(ttl, JSONResponse):
        return ttl
    lease = _lock(request).renew(lease_id, ttl)
    if lease is None:
        return _error(404, "lock not found: it expired or was released")
    return JSONResponse(lease.private())


@router.delete(PATH + "/{lease_id}")
async def release(lease_id: str, request: Request) -> JSONResponse:
    if not _lock(request).release(lease_id):
        return _error(404, "lock not found: it expired or was released")
    return JSONResponse({})
