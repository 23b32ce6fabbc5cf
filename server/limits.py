"""Request limits: connections and requests at once, and body sizes as bytes arrive (one pure ASGI
middleware; nothing is buffered).

More than `CORRAL_MAX_CONNECTIONS` requests in flight, or a request on a connection beyond that
many open ones (`server.http_protocol` puts the count in the scope), is a 503 naming the limit,
with `connection: close`. It is answered here rather than by uvicorn's `limit_concurrency` (whose
503 bypasses the app) so it is shaped for the path's API family, counted and logged like any answer.
A request framed both by `Content-Length` and `Transfer-Encoding` is a 400 and the connection closed.

A body larger than its limit is a 413 naming the limit: at once when `Content-Length` declares
it, otherwise as soon as the bytes read pass it (the receive that crosses the limit raises
`PayloadTooLarge`, which the app answers like any other `ServerError`, after the handler's own
clean-up: a blob upload removes its temp file). Blob uploads (`POST /api/blobs/*` and registry
upload sessions) have their own limit, `CORRAL_MAX_BLOB_BYTES`; every other body
`CORRAL_MAX_BODY_BYTES`. Zero means no limit.
"""

from __future__ import annotations

import re
from typing import Any

from server.asgi_errors import send_error
from server.errors import PayloadTooLarge

_BLOB_UPLOAD = re.compile(r"/api/blobs/[^/]*|/v2/.+/blobs/uploads/.*")


def is_blob_upload(method: str, path: str) -> bool:
    return method in ("POST", "PUT", "PATCH") and _BLOB_UPLOAD.fullmatch(path) is not None


def too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes"


def too_many(limit: int) -> str:
    return f"server busy: more than {limit} connections or requests at once"


class LimitMiddleware:
    def __init__(self, app: Any, *, max_body: int, max_blob: int, max_connections: int = 0) -> None:
        self.app = app
        self.max_body = max_body
        self.max_blob = max_blob
        self.max_connections = max_connections
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if _ambiguous_framing(scope):
            await send_error(send, path, 400, AMBIGUOUS, code="bad_request", headers=[(b"connection", b"close")])
            return
        n = self.max_connections
        if n > 0 and (self.in_flight >= n or (scope.get("extensions") or {}).get("corral.connections", 0) > n):
            await send_error(send, path, 503, too_many(n), code="server_busy", headers=[(b"connection", b"close")])
            return
        self.in_flight += 1
        try:
            await self._limit_body(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _limit_body(self, scope: dict, receive: Any, send: Any) -> None:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        limit = self.max_blob if is_blob_upload(method, path) else self.max_body
        if limit <= 0:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_error(send, path, 413, too_large(limit), code="request_too_large")
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


AMBIGUOUS = "request has both Content-Length and Transfer-Encoding"


def _ambiguous_framing(scope: dict) -> bool:
    """Both length headers: a proxy that trusts the other one would see other requests in the
    bytes (request smuggling). h11 follows Transfer-Encoding and uvicorn keeps the connection;
    RFC 9112 6.3 says to close it after answering, and lets the server refuse: it does."""
    names = {k.lower() for k, _ in scope.get("headers") or ()}
    return b"content-length" in names and b"transfer-encoding" in names


def _content_length(scope: dict) -> int | None:
    for k, v in scope.get("headers") or ():
        if k.lower() == b"content-length":
            text = v.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def install(app: Any, config: Any) -> None:
    app.add_middleware(LimitMiddleware, max_body=config.max_body_bytes, max_blob=config.max_blob_bytes,
                       max_connections=config.max_connections)
