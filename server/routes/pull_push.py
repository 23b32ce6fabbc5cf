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

from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server import observe
from server.api_types import json_object
from server.errors import BadRequest, ServerError
from server.registry import credentials as creds_mod
from server.registry.pull import pull
from server.registry.push import push
from server.registry.storage import RegistryStore
from server.streaming import aggregate_response, ndjson_response
from toolchain.names import parse_name

__all__ = ["router"]

router = APIRouter()


async def _handle(request: Request, flow: Callable[..., AsyncIterator[dict]]) -> Response:
    body = json_object(await request.body())
    model = body.get("model") or body.get("name") or ""
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    insecure, stream = body.get("insecure", False), body.get("stream", True)
    if not isinstance(insecure, bool) or not isinstance(stream, (bool, type(None))):
        raise BadRequest("insecure and stream must be true or false")
    name = parse_name(model)
    if not name.is_valid():
        raise BadRequest("invalid model name")
    try:
        credentials = creds_mod.lookup(name.host)
    except creds_mod.CredentialsError as exc:
        raise ServerError(f"registry credentials: {exc}") from None
    store: RegistryStore = request.app.state.registry_store
    progress = observe.track(flow.__name__, flow(store, name, insecure=insecure, credentials=credentials))
    if stream is False:
        return await aggregate_response(progress, _last)
    return await ndjson_response(progress)


def _last(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return messages[-1]


@router.post("/api/pull")
async def api_pull(request: Request) -> Response:
    return await _handle(request, pull)


@router.post("/api/push")
async def api_push(request: Request) -> Response:
    return await _handle(request, push)
