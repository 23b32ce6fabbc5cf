"""The apply lock `stack apply` takes on a server: one holder at a time, held as a TTL lease.

    POST   /api/corral/lock        {"owner": "alice@ci pid 12", "ttl": 60}
           → 200 {"id", "owner", "since", "expires_at", "ttl"}
           → 409 {"error": "locked by <owner> since <time> (expires <time>)"}
    PUT    /api/corral/lock/{id}   {"ttl": 60}  renews the lease → 200 (as POST) | 404
    DELETE /api/corral/lock/{id}   releases it → 200 {} | 404
    GET    /api/corral/lock        → 200 {"locked": false} | {"locked": true, "owner", "since", "expires_at"}

A lease ends `ttl` seconds after it was taken or last renewed, so an apply that crashed (or lost
its network) never locks the server for longer than its TTL. The lease id is the only way to renew
or release a lease; `GET` shows who holds the lock but never the id. State lives in this server
process's memory: a restarted server starts unlocked (no apply can be mid-way on a server that
just restarted, since every apply step is a request to it). Which keys may call these routes is
decided in `server.auth` (admin). Errors use Ollama's `{"error": ...}` shape; a bad body is a 400
naming the field.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
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
    """One lease at most; `clock` is wall time (seconds) so expiry times can be shown to people."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._guard = threading.Lock()
        self._lease: Optional[Lease] = None

    def _current(self) -> Optional[Lease]:
        if self._lease is not None and self._lease.expires <= self._clock():
            self._lease = None  # expired: as if released
        return self._lease

    def holder(self) -> Optional[Lease]:
        with self._guard:
            return self._current()

    def acquire(self, owner: str, ttl: float) -> tuple[Optional[Lease], Optional[Lease]]:
        """(the new lease, None) or (None, the lease that holds the lock)."""
        with self._guard:
            held = self._current()
            if held is not None:
                return None, held
            now = self._clock()
            self._lease = Lease(secrets.token_urlsafe(16), owner, now, now + ttl, ttl)
            return self._lease, None

    def renew(self, lease_id: str, ttl: Optional[float]) -> Optional[Lease]:
        with self._guard:
            held = self._current()
            if held is None or not secrets.compare_digest(held.id, lease_id):
                return None
            held.ttl = ttl if ttl is not None else held.ttl
            held.expires = self._clock() + held.ttl
            return held

    def release(self, lease_id: str) -> bool:
        with self._guard:
            held = self._current()
            if held is None or not secrets.compare_digest(held.id, lease_id):
                return False
            self._lease = None
            return True


def install(app: FastAPI) -> None:
    app.state.apply_lock = ApplyLock()
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
