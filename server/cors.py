"""CORS for browser clients, following `OLLAMA_ORIGINS` the way Ollama does.

Ollama runs gin-contrib/cors with wildcards and browser-extension schemes allowed, its own list
of allowed request headers (the OpenAI SDK's `x-stainless-*` among them) and the origins of
`envconfig.AllowedOrigins()`: whatever `OLLAMA_ORIGINS` lists (comma separated) plus, always,
localhost / 127.0.0.1 / 0.0.0.0 over http and https with any port, and the app://, file://,
tauri://, vscode-webview:// and vscode-file:// schemes.

What a request gets (`decide`, pure):
  * no `Origin`, or an `Origin` equal to http(s)://<Host> (same origin): passed through untouched;
  * an origin not allowed: 403 naming the origin (Ollama's bare 403 says nothing; the body is shaped
    for the path's API family like every refusal, `server.asgi_errors`), the request never reaches
    a route;
  * an allowed preflight (`OPTIONS`): 204 with Allow-Methods/Headers, Max-Age 43200, Vary;
  * an allowed request: passed through, the response gets Access-Control-Allow-Origin (the
    origin itself, or `*` when `OLLAMA_ORIGINS` contains `*`) and `Vary: Origin`.

An `OLLAMA_ORIGINS` entry with more than one `*`, or without `*` and without an http(s) or
browser-extension scheme, is a configuration error (Ollama panics at startup; we refuse to start
with a message naming the entry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from server.asgi_errors import send_error
from toolchain.errors import CorralError

ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
    # OpenAI SDK headers
    "OpenAI-Beta", "x-stainless-arch", "x-stainless-async", "x-stainless-custom-poll-interval",
    "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
    "x-stainless-poll-helper", "x-stainless-retry-count", "x-stainless-runtime", "x-stainless-runtime-version",
    "x-stainless-timeout",
)
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_AGE_SECONDS = 12 * 3600

_SCHEMES = ("http://", "https://", "chrome-extension://", "safari-extension://", "moz-extension://",
            "ms-browser-extension://")


class CorsConfigError(CorralError):
    """OLLAMA_ORIGINS holds an origin the server cannot use."""


def default_origins() -> list[str]:
    out = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        out += [f"http://{host}", f"https://{host}", f"http://{host}:*", f"https://{host}:*"]
    return out + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]


def allowed_origins(ollama_origins: str) -> list[str]:
    """`OLLAMA_ORIGINS` entries (already stripped of quotes/spaces as for any OLLAMA_ variable)
    followed by the defaults."""
    extra = ollama_origins.split(",") if ollama_origins else []
    return extra + default_origins()


@dataclass(frozen=True)
class Origins:
    allow_all: bool
    exact: frozenset[str]
    wildcards: tuple[tuple[str, str], ...]  # (prefix, suffix) around the one "*"

    def allows(self, origin: str) -> bool:
        if self.allow_all or origin in self.exact:
            return True
        return any(origin.startswith(p) and origin.endswith(s) and len(origin) >= len(p) + len(s)
                   for p, s in self.wildcards)


def parse_origins(origins: list[str]) -> Origins:
    allow_all = False
    exact: set[str] = set()
    wildcards: list[tuple[str, str]] = []
    for raw in origins:
        origin = raw.strip()
        if origin == "*":
            allow_all = True
            continue
        stars = origin.count("*")
        if stars > 1:
            raise CorsConfigError(f'OLLAMA_ORIGINS: "{raw}" has more than one "*"')
        if stars == 0:
            if not origin.startswith(_SCHEMES):
                raise CorsConfigError(
                    f'OLLAMA_ORIGINS: "{raw}" is not an origin: it must contain "*" or start with '
                    + ", ".join(_SCHEMES))
            exact.add(origin.lower())
            continue
        prefix, _, suffix = origin.partition("*")
        wildcards.append((prefix, suffix))
    return Origins(allow_all, frozenset(exact), tuple(wildcards))


@dataclass(frozen=True)
class Decision:
    """What to do with a request: `status` set means answer now with `headers` (and, for a refusal,
    the error `message`); otherwise pass it on and add `headers` to the response."""

    status: Optional[int]
    headers: tuple[tuple[str, str], ...]
    message: Optional[str] = None


def refused(origin: str) -> str:
    return (f"forbidden: origin {json.dumps(origin)} is not allowed "
            "(a browser page may call this server only from an origin listed in OLLAMA_ORIGINS)")


PASS = Decision(None, ())


def decide(method: str, origin: Optional[str], host: str, origins: Origins) -> Decision:
    if not origin or origin in (f"http://{host}", f"https://{host}"):
        return PASS
    if not origins.allows(origin):
        return Decision(403, (), refused(origin))
    allow_origin = "*" if origins.allow_all else origin
    if method == "OPTIONS":
        headers = [("Access-Control-Allow-Methods", ",".join(ALLOWED_METHODS)),
                   ("Access-Control-Allow-Headers", ",".join(_canonical(h) for h in ALLOWED_HEADERS)),
                   ("Access-Control-Max-Age", str(MAX_AGE_SECONDS)),
                   ("Access-Control-Allow-Origin", allow_origin)]
        if not origins.allow_all:
            headers += [("Vary", "Origin"), ("Vary", "Access-Control-Request-Method"),
                        ("Vary", "Access-Control-Request-Headers")]
        return Decision(204, tuple(headers))
    headers = [("Access-Control-Allow-Origin", allow_origin)]
    if not origins.allow_all:
        headers.append(("Vary", "Origin"))
    return Decision(None, tuple(headers))


def _canonical(header: str) -> str:
    """Go's http.CanonicalHeaderKey: each dash-separated word capitalised."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in header.split("-"))


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class CORSMiddleware:
    """Plain ASGI middleware (streamed responses pass through untouched)."""

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ()))
        decision = decide(scope["method"], headers.get("origin"), headers.get("host", ""), self.origins)
        if decision.message is not None:
            await send_error(send, scope.get("path", ""), decision.status or 403, decision.message, code="forbidden")
            return
        if decision.status is not None:
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers]
            await send({"type": "http.response.start", "status": decision.status, "headers": raw})
            await send({"type": "http.response.body", "body": b""})
            return
        if not decision.headers:
            await self.app(scope, receive, send)
            return
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers]

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", ())) + extra}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def install(app: Any, ollama_origins: str) -> None:
    """Wrap `app` (a FastAPI/Starlette app) in the CORS middleware for `OLLAMA_ORIGINS`."""
    app.add_middleware(CORSMiddleware, origins=parse_origins(allowed_origins(ollama_origins)))
