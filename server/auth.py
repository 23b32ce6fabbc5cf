"""Who may call what: the Host check against DNS rebinding, API keys, and the route → scope table.

One pure ASGI middleware (`AuthMiddleware`), so streaming responses pass through untouched.
For every HTTP request, in order:

1. **Host** (only when the server is bound to loopback, as in Ollama): the `Host` header must name
   this machine's loopback — `localhost`, `*.localhost`, a loopback IP (`127.0.0.1`, `[::1]`), any
   port — or be the machine's own hostname (as Ollama allows), or be listed in
   `CORRAL_ALLOWED_HOSTS`; otherwise 403. A browser page on `rebind.attacker.example` whose DNS
   now points at 127.0.0.1 sends its own name as Host, so it is refused before anything else runs
   (CVE-2024-28224). Other dotless names are refused too: a search domain or LAN name resolution
   (LLMNR, NetBIOS) can hand an attacker one.
2. **Key**: `required_scope(method, path)` says what the route needs (the table of
   `toolchain/routes.py` is the only place that knows; `stack render` derives nginx's allow-list
   from it too). With no key configured the server is open as Ollama is — but only on a loopback
   bind or with `CORRAL_ALLOW_UNAUTHENTICATED=1`; a public bind whose keys file became empty
   refuses everything rather than fall open. With keys, everything but `GET`/`HEAD /` (and
   CORS preflights, which carry no credentials) needs `Authorization: Bearer <token>`: missing or
   unknown → 401 with `WWW-Authenticate: Bearer`; a `user` key on an `admin` route → 403.
   The token is hashed and compared in constant time with every stored hash; it is never logged
   or echoed. The matched key's name goes to `scope["state"]["corral.client"]` for the access log.

Error bodies follow the API family of the path: OpenAI's shape on `/v1/*` (code
`invalid_api_key`), the OCI distribution shape on `/v2/*`, Ollama's `{"error": ...}` elsewhere.

The keys file is re-read when its stat (mtime, size, inode) changes, checked at most once per
`KeyRing.check_interval` seconds, so `stack keys add/revoke` take effect without a restart. A
file that turns unreadable or malformed keeps the last good keys (and logs why): it never opens
the server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

from server.asgi_errors import send_error
from toolchain import keys as keyfile
from toolchain import routes

log = logging.getLogger("corral.auth")


def required_scope(method: str, path: str) -> routes.Scope:
    """What a request needs: "public", "user" or "admin". CORS preflights are public (a browser
    never sends credentials on them; the CORS layer decides what they may learn)."""
    if method == "OPTIONS":
        return "public"
    return routes.route_scope(method, path)


# -- hosts ----------------------------------------------------------------------------------------


def is_loopback_bind(host: str) -> bool:
    """Whether a bind address (as `server.config.bind_address` returns it) is loopback only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a `Host` header value, lowercased, without port or trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:
        name = value.split(":", 1)[0]
    else:
        name = value
    return name[:-1] if name.endswith(".") else name


def host_allowed(header: str | None, extra: Iterable[str] = ()) -> bool:
    """Whether a request's Host is one a rebinding page cannot send: a loopback name or IP, or an
    allowed extra name (`CORRAL_ALLOWED_HOSTS` and the machine's hostname, see `install`). No Host:
    allowed (HTTP/1.0 tools; every browser sends one)."""
    if header is None or header.strip() == "":
        return True
    name = host_name(header)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        if ipaddress.ip_address(name).is_loopback:
            return True
    except ValueError:
        pass
    return name in {host_name(e) for e in extra if e.strip()}


# -- keys -------------------------------------------------------------------------------------------


class KeyRing:
    """The keys file as the server sees it: reloaded when it changes on disk."""

    check_interval = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[keyfile.Key] = keyfile.load(path)  # a malformed file at start-up is fatal
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def keys(self) -> Sequence[keyfile.Key]:
        now = time.monotonic()
        if now - self._checked >= self.check_interval:
            self._checked = now
            self.refresh()
        return self._keys

    def refresh(self) -> None:
        try:
            stamp = self._stat()
        except OSError as exc:
            log.error("keys file %s: %s; keeping the %d keys loaded before", self.path, exc, len(self._keys))
            return
        if stamp == self._stamp:
            return
        try:
            loaded = keyfile.load(self.path)
        except keyfile.KeysError as exc:
            log.error("%s; keeping the %d keys loaded before", exc, len(self._keys))
            return
        self._stamp = stamp
        if len(loaded) != len(self._keys) or loaded != self._keys:
            log.info("keys file %s reloaded: %d keys", self.path, len(loaded))
        self._keys = loaded


# -- the middleware -----------------------------------------------------------------------------------

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        loopback: bool,
        allow_unauthenticated: bool = False,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.loopback = loopback
        self.allow_unauthenticated = allow_unauthenticated
        self.allowed_hosts = tuple(allowed_hosts)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if self.loopback and not host_allowed(headers.get("host"), self.allowed_hosts):
            await _deny(send, path, 403, "forbidden", f"host {json.dumps(host_name(headers['host']))} is not allowed "
                        "(a loopback server answers only localhost names; add others to CORRAL_ALLOWED_HOSTS)")
            return
        need = required_scope(method, path)
        keys = self.keyring.keys()
        state = scope.setdefault("state", {})
        if not keys and (self.loopback or self.allow_unauthenticated):
            await self.app(scope, receive, send)  # open, as Ollama
            return
        if need == "public":
            await self.app(scope, receive, send)
            return
        token = _bearer(headers.get("authorization"))
        key = keyfile.match(keys, token) if token else None
        if key is None:
            await _deny(send, path, 401, "unauthorized", "missing API key" if not token else "invalid API key")
            return
        state["corral.client"] = key.name
        if routes.SCOPE_RANK[key.scope] < routes.SCOPE_RANK[need]:
            await _deny(send, path, 403, "forbidden", f"this route needs an {need} key; key {key.name!r} has scope {key.scope}")
            return
        await self.app(scope, receive, send)


def _headers(scope: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or ():
        name = k.decode("latin-1").lower()
        if name not in out:  # first wins: a second Host/Authorization cannot override the first
            out[name] = v.decode("latin-1")
    return out


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def _deny(send: Any, path: str, status: int, word: str, detail: str) -> None:
    if status == 401:
        await send_error(send, path, 401, detail, code="invalid_api_key", native=word,
                         headers=[(b"www-authenticate", b"Bearer")])
    else:
        await send_error(send, path, status, f"{word}: {detail}", code=word)


def install(app: Any, config: Any) -> None:
    """Add the middleware to `app` for `config` (a `server.config.Config`)."""
    from server.config import bind_address

    host, _ = bind_address(config.host)
    app.state.keyring = KeyRing(config.keys_file)
    app.add_middleware(
        AuthMiddleware,
        keyring=app.state.keyring,
        loopback=is_loopback_bind(host),
        allow_unauthenticated=config.allow_unauthenticated,
        allowed_hosts=(*config.allowed_hosts, socket.gethostname()),
    )
