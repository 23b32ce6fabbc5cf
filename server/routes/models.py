"""Model-management routes: blobs, create, tags, show, copy, delete (Ollama's handlers), and the
store's free space (`/api/corral/store`).

Thin: parse the request (`server.api_types`), call the store, shape the response. Errors are
`server.errors` exceptions, turned into `{"error": ...}` bodies by `server.app`.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import anyio
import anyio.from_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from server import store_create, store_model
from server.api_types import (
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    ListModelResponse,
    ModelDetails,
    ShowRequest,
    go_time,
    parse_body,
)
from server.errors import BadRequest, BlobNotFound, InvalidName, ModelNotFound, PayloadTooLarge, ServerError
from server.manifest import normalize_digest
from server.store import Store
from toolchain.names import parse_name

router = APIRouter()

#: Largest JSON request body accepted (blob uploads are streamed and not limited by this).
MAX_JSON_BODY = 32 << 20


async def read_body(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The request body, or 413 once it grows past `limit` (never buffered beyond it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _store(request: Request) -> Store:
    return request.app.state.store


# -- blobs ------------------------------------------------------------------------------------


@router.head("/api/blobs/{digest}")
def head_blob(digest: str, request: Request) -> Response:
    if not _store(request).has_blob(normalize_digest(digest)):
        raise BlobNotFound(digest)
    return Response(status_code=200)


@router.post("/api/blobs/{digest}")
async def create_blob(digest: str, request: Request) -> Response:
    store = _store(request)
    expected = normalize_digest(digest)
    if store.has_blob(expected):
        return Response(status_code=200)
    body = request.stream().__aiter__()

    def chunks() -> Iterator[bytes]:
        while True:
            try:
                yield anyio.from_thread.run(body.__anext__)
            except StopAsyncIteration:
                return

    try:
        await anyio.to_thread.run_sync(lambda: store.write_blob(chunks(), expected=expected))
    except ClientDisconnect:  # the upload was abandoned: nothing was kept, nobody to answer
        return Response(status_code=499)
    return Response(status_code=201)


# -- create -----------------------------------------------------------------------------------


@router.post("/api/create")
async def create(request: Request) -> Response:
    raw = await read_body(request)
    return await anyio.to_thread.run_sync(_create, _store(request), raw)


def _create(store: Store, raw: bytes) -> Response:
    req = parse_body(raw, CreateRequest)
    model = req.model or req.name
    if not model or not parse_name(model).is_valid():
        raise InvalidName()
    quantize = req.quantize or req.quantization
    if req.modelfile and not req.from_ and req.files is None:
        creq, statuses = store_create.from_modelfile(model, req.modelfile, quantize=quantize)
    elif req.path and not req.from_ and req.files is None:
        raise BadRequest("the 'path' field is not supported: send the Modelfile text as 'modelfile'")
    else:
        license = [req.license] if isinstance(req.license, str) else list(req.license or [])
        creq = store_create.CreateRequest(
            model=model,
            from_=req.from_,
            files=dict(req.files or {}),
            adapters=dict(req.adapters or {}),
            template=req.template,
            system=req.system,
            license=[text for text in license if text or not isinstance(req.license, str)],
            parameters=dict(req.parameters or {}),
            messages=list(req.messages or []),
            renderer=req.renderer,
            parser=req.parser,
            requires=req.requires,
            quantize=quantize,
        )
        statuses = []
    plan = store_create.plan(store, creq, pre_statuses=statuses)
    progress = store_create.execute(store, plan)
    if req.stream is False:
        last: dict[str, Any] = {}
        for last in progress:
            pass
        return JSONResponse(last)
    return StreamingResponse(_ndjson(progress), media_type="application/x-ndjson")


def _ndjson(messages: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    try:
        for message in messages:
            yield json.dumps(message).encode() + b"\n"
    except ServerError as exc:
        yield json.dumps({"error": exc.message}).encode() + b"\n"
    except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band, as Ollama does
        yield json.dumps({"error": str(exc) or exc.__class__.__name__}).encode() + b"\n"


# -- tags, show, copy, delete -------------------------------------------------------------------


@router.api_route("/api/tags", methods=["GET", "HEAD"])
def tags(request: Request) -> Response:
    store = _store(request)
    models = []
    for entry in store.list():
        try:
            model = store_model.load_model(store, entry.name)
            details, caps = model.details(), model.capabilities(store)
        except ServerError:
            continue  # an unreadable model is skipped, as Ollama skips corrupt manifests
        short = entry.name.display_shortest()
        models.append(
            (
                entry.manifest.mtime,
                ListModelResponse(
                    name=short,
                    model=short,
                    modified_at=go_time(entry.manifest.mtime),
                    size=entry.manifest.size(),
                    digest=entry.manifest.digest,
                    details=ModelDetails(**{**details, "parent_model": ""}),  # always "" in Ollama's list
                    capabilities=caps or None,
                ),
            )
        )
    models.sort(key=lambda item: item[0], reverse=True)
    return JSONResponse({"models": [_list_item(m) for _, m in models]})


@router.api_route("/api/corral/store", methods=["GET", "HEAD"])
def store_space(request: Request) -> Response:
    """How full the store's filesystem is, for `stack doctor` (a Corral route: Ollama has none).
    Bytes only, never the path: a key holder learns how much room is left, not where."""
    free, total = _store(request).disk_space()
    return JSONResponse({"free_bytes": free, "total_bytes": total})


def _list_item(m: ListModelResponse) -> dict[str, Any]:
    item = m.model_dump(exclude_none=True)
    item["details"]["families"] = m.details.families  # always present (may be null), as in Ollama
    return item


@router.post("/api/show")
async def show(request: Request) -> Response:
    raw = await read_body(request)
    return await anyio.to_thread.run_sync(_show, _store(request), raw)


def _show(store: Store, raw: bytes) -> Response:
    req = parse_body(raw, ShowRequest)
    model_name = req.model or req.name
    if not model_name:
        raise BadRequest("model is required")
    name = parse_name(model_name)
    if not name.is_valid():
        raise InvalidName()
    name = store.resolve(name)
    try:
        model = store_model.load_model(store, name)
    except ModelNotFound as exc:
        if "missing blob" in exc.message:
            raise
        raise ModelNotFound(f"model '{name.display_shortest()}' not found") from None
    body = store_model.show(model, store, verbose=req.verbose, system=req.system, options=req.options)
    body["modified_at"] = go_time(model.manifest.mtime)
    return JSONResponse(body)


@router.post("/api/copy")
async def copy(request: Request) -> Response:
    raw = await read_body(request)
    return await anyio.to_thread.run_sync(_copy, _store(request), raw)


def _copy(store: Store, raw: bytes) -> Response:
    req = parse_body(raw, CopyRequest)
    src = parse_name(req.source)
    if not src.is_valid():
        raise BadRequest(f"source {_go_quote(req.source)} is invalid")
    dst = parse_name(req.destination)
    if not dst.is_valid() or dst.digest:
        raise BadRequest(f"destination {_go_quote(req.destination)} is invalid")
    try:
        store.copy(src, dst)
    except ModelNotFound:
        raise ModelNotFound(f"model {_go_quote(req.source)} not found") from None
    return Response(status_code=200)


@router.delete("/api/delete")
async def delete(request: Request) -> Response:
    raw = await read_body(request)
    return await anyio.to_thread.run_sync(_delete, _store(request), raw)


def _delete(store: Store, raw: bytes) -> Response:
    req = parse_body(raw, DeleteRequest)
    model_name = req.model or req.name
    if not model_name:
        raise BadRequest("model is required")
    name = parse_name(model_name)
    if not name.is_valid():
        raise BadRequest(f"name {_go_quote(model_name)} is invalid")
    try:
        store.delete(name)
    except ModelNotFound:
        raise ModelNotFound(f"model '{model_name}' not found") from None
    return Response(status_code=200)


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)
