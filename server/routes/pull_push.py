"""`POST /api/pull` and `POST /api/push`: Ollama's request shapes and streamed progress.

Request: ``model`` (or ``name``), ``insecure`` (plain HTTP to the registry; HTTPS
otherwise), ``stream`` (default true). Streaming answers NDJSON progress objects with
HTTP 200 and, on failure, a last ``{"error": "..."}`` line; ``stream: false`` answers
the last progress object (``{"status": "success"}``) or ``{"error": ...}`` with the
failure's status: 400 for a bad request, 404 for a model the registry (or, for push,
the store) does not have, 502 when the remote registry fails or sends bad data (Ollama
answers 500), 507 when the disk is full.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from server import observe
from server.registry import credentials as creds_mod
from server.errors import ServerError
from server.registry.pull import pull
from server.registry.push import push
from server.registry.storage import RegistryStore
from toolchain.names import parse_name

__all__ = ["router"]

router = APIRouter()
log = logging.getLogger(__name__)


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _body(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _handle(request: Request, flow: Callable[..., AsyncIterator[dict]]) -> Any:
    body = await _body(request)
    if body is None:
        return _bad_request("invalid request body")
    model = body.get("model") or body.get("name") or ""
    if not isinstance(model, str) or not model:
        return _bad_request("model is required")
    insecure, stream = body.get("insecure", False), body.get("stream", True)
    if not isinstance(insecure, bool) or not isinstance(stream, (bool, type(None))):
        return _bad_request("insecure and stream must be true or false")
    name = parse_name(model)
    if not name.is_valid():
        return _bad_request("invalid model name")
    try:
        credentials = creds_mod.lookup(name.host)
    except creds_mod.CredentialsError as exc:
        return JSONResponse({"error": f"registry credentials: {exc}"}, status_code=500)
    store: RegistryStore = request.app.state.registry_store
    try:
        progress = observe.track(flow.__name__, flow(store, name, insecure=insecure, credentials=credentials))
    except ServerError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    if stream is False:
        last: dict = {}
        try:
            async for message in progress:
                last = message
        except ServerError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse(last)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for message in progress:
                yield json.dumps(message).encode() + b"\n"
        except ServerError as exc:
            yield json.dumps({"error": exc.message}).encode() + b"\n"
        except Exception as exc:  # noqa: BLE001 - a stream must end with an error line, not a cut
            log.exception("%s failed", request.url.path)
            yield json.dumps({"error": f"{exc.__class__.__name__}: {exc}"}).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/api/pull")
async def api_pull(request: Request) -> Any:
    return await _handle(request, pull)


@router.post("/api/push")
async def api_push(request: Request) -> Any:
    return await _handle(request, push)
