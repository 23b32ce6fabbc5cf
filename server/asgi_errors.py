"""Error answers sent by the ASGI middlewares (before or around the app), shaped for the path's API
family: OpenAI's `{"error": {"message", "type", "param", "code"}}` on `/v1/*`, the OCI distribution
`{"errors": [{"code", "message"}]}` on `/v2/*`, Ollama's `{"error": "..."}` everywhere else."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from server.openai.errors import error_body as openai_error_body

_OCI_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 413: "SIZE_INVALID", 503: "TOOMANYREQUESTS"}


def error_body(path: str, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
    """The error body for `path`'s API family; `code` is OpenAI's `code` field (e.g. `invalid_api_key`)."""
    if path == "/v1" or path.startswith("/v1/"):
        return openai_error_body(message, status, code=code)
    if path == "/v2" or path.startswith("/v2/"):  # as server.registry.routes answers
        return {"errors": [{"code": _OCI_CODES.get(status, "UNSUPPORTED"), "message": message, "detail": None}]}
    return {"error": message}


async def send_error(
    send: Callable[[dict], Awaitable[None]],
    path: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    native: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete JSON error response. `native` replaces `message` in Ollama's shape (e.g. the
    bare "unauthorized" Ollama clients expect) while the other shapes carry the detail."""
    body = error_body(path, status, message, code=code)
    if native is not None and "error" in body and isinstance(body["error"], str):
        body = {"error": native}
    raw = json.dumps(body).encode()
    out = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(raw)).encode())]
    out += headers or []
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": raw})
