"""Native inference routes: /api/generate, /api/chat, /api/embed, /api/embeddings, /api/ps.

Thin: parse the body into the request type, hand a `TextJob` to the engine, shape its events
into Ollama's chunks (plain dicts, serialised by server.streaming).
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Optional, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from server.inference import Engine, l2_normalise, now_ns
from server.inference_types import ChatRequest, EmbeddingRequest, EmbedRequest, GenerateRequest, TextJob, \
    validation_message
from server.errors import ServerError
from server.scheduler import SchedulerError
from server.streaming import RequestError, aggregate_response, error_response, json_response, merge_chat, \
    merge_generate, ndjson_response

router = APIRouter()

R = TypeVar("R", bound=BaseModel)

# Go adds math.MaxInt64 ns to "now" for a keep-alive of forever.
_FOREVER_SECONDS = (2**63 - 1) / 1e9


_second: list[Any] = [-1, ""]  # the last whole second formatted (created_at is called per token)


def created_at() -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros trimmed, UTC ("...T19:22:45.499127Z")."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    if seconds != _second[0]:
        _second[0], _second[1] = seconds, datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        return f"{_second[1]}.{nanos:09d}".rstrip("0") + "Z"
    return _second[1] + "Z"


def _rfc3339(seconds: int, nanos: int) -> str:
    base = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        return f"{base}.{nanos:09d}".rstrip("0") + "Z"
    return base + "Z"


def expires_at(unix: float) -> str:
    if not math.isfinite(unix):
        unix = time.time() + _FOREVER_SECONDS
    seconds = int(unix)
    return _rfc3339(seconds, int(round((unix - seconds) * 1e9)) % 1_000_000_000)


def engine(request: Request) -> Engine:
    state = request.app.state
    eng = getattr(state, "engine", None)
    if eng is None:
        from server import model_source

        eng = state.engine = model_source.make_engine(state)
        eng.observer = getattr(state, "metrics", None)  # server.observe: tokens and TTFT by model
    return eng


async def parse(request: Request, model: type[R]) -> R:
    from server.routes.models import read_body  # the JSON body size limit of every route (413)

    try:
        body = await read_body(request)
    except ServerError as exc:
        raise RequestError(exc.message, exc.status) from None
    if not body.strip():
        raise RequestError("missing request body", 400)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"invalid JSON: {exc}", 400) from None
    if not isinstance(data, dict):
        raise RequestError("invalid request: expected a JSON object", 400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestError(validation_message(exc), 400) from None


def _error(exc: Exception) -> Response:
    if isinstance(exc, (RequestError, SchedulerError)):
        return error_response(exc.message, exc.status)
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    if isinstance(status, int) and isinstance(message, str):
        return error_response(message, status)
    raise exc


# -- generate and chat ---------------------------------------------------------------------------


async def _generate_chunks(model: str, events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    logprobs: list[dict[str, Any]] = []  # entries waiting for the chunk of their text
    try:
        async for kind, value in events:
            chunk: dict[str, Any]
            if kind == "logprobs":
                logprobs.extend(value)
                continue
            if kind == "text":
                chunk = {"model": model, "created_at": created_at(), "response": value, "done": False}
            elif kind == "thinking":
                chunk = {"model": model, "created_at": created_at(), "response": "", "thinking": value, "done": False}
            elif kind == "debug":
                chunk = {"model": model, "created_at": created_at(), "_debug_info": value}
            elif kind == "done":
                chunk = {"model": model, "created_at": created_at(), "response": "", "done": True,
                         "done_reason": value.done_reason}
                if value.context:
                    chunk["context"] = value.context
                chunk.update(value.metrics())
            else:
                continue
            if logprobs:
                chunk["logprobs"], logprobs = logprobs, []
            yield chunk
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _chat_chunks(model: str, events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    logprobs: list[dict[str, Any]] = []  # entries waiting for the chunk of their text
    try:
        async for kind, value in events:
            chunk: dict[str, Any]
            if kind == "logprobs":
                logprobs.extend(value)
                continue
            if kind == "text":
                chunk = {"model": model, "created_at": created_at(),
                         "message": {"role": "assistant", "content": value}, "done": False}
            elif kind == "thinking":
                chunk = {"model": model, "created_at": created_at(),
                         "message": {"role": "assistant", "content": "", "thinking": value}, "done": False}
            elif kind == "debug":
                chunk = {"model": model, "created_at": created_at(), "_debug_info": value}
            elif kind == "tool_calls":
                chunk = {"model": model, "created_at": created_at(),
                         "message": {"role": "assistant", "content": "", "tool_calls": value}, "done": False}
            elif kind == "done":
                chunk = {"model": model, "created_at": created_at(),
                         "message": {"role": "assistant", "content": ""}, "done": True,
                         "done_reason": value.done_reason}
                chunk.update(value.metrics())
            else:
                continue
            if logprobs:
                chunk["logprobs"], logprobs = logprobs, []
            yield chunk
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _last(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return chunks[-1]


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, GenerateRequest)
    except RequestError as exc:
        return _error(exc)
    if not req.model:
        return error_response("model '' not found", 404)
    job = TextJob.from_generate(req)
    chunks = _generate_chunks(req.model, engine(request).generate(job, started))
    if req.stream is False or job.debug_render_only:
        return await aggregate_response(chunks, _last if job.debug_render_only else merge_generate, request.receive)
    return await ndjson_response(chunks, request.receive)


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, ChatRequest)
    except RequestError as exc:
        return _error(exc)
    if not req.model:
        return error_response("model is required", 400)
    job = TextJob.from_chat(req)
    chunks = _chat_chunks(req.model, engine(request).generate(job, started))
    if req.stream is False or job.debug_render_only:
        return await aggregate_response(chunks, _last if job.debug_render_only else merge_chat, request.receive)
    return await ndjson_response(chunks, request.receive)


# -- embeddings --------------------------------------------------------------------------------


@router.post("/api/embed")
async def embed(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, EmbedRequest)
        if not req.model:
            return error_response("model '' not found", 404)
        if req.dimensions is not None and req.dimensions < 0:
            raise RequestError("dimensions must be a positive number", 400)
        inputs: list[str] = req.input
        vectors, count, load_ns = await engine(request).embed(
            req.model, inputs, truncate=req.truncate is not False, options=dict(req.options or {}),
            keep_alive=req.keep_alive, started=started)
        if not inputs:
            return json_response({"model": req.model, "embeddings": []})
        embeddings = [l2_normalise(v, req.dimensions) for v in vectors]
    except Exception as exc:  # noqa: BLE001 - mapped to Ollama's {"error"} answers
        return _error(exc)
    return json_response({"model": req.model, "embeddings": embeddings, "total_duration": now_ns() - started,
                          "load_duration": load_ns, "prompt_eval_count": count})


@router.post("/api/embeddings")
async def embeddings(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, EmbeddingRequest)
        if not req.model:
            return error_response("model is required", 400)
        inputs = [req.prompt] if req.prompt else []
        vectors, _, _ = await engine(request).embed(
            req.model, inputs, truncate=True, options=dict(req.options or {}), keep_alive=req.keep_alive,
            started=started)
    except Exception as exc:  # noqa: BLE001 - mapped to Ollama's {"error"} answers
        return _error(exc)
    return json_response({"embedding": [float(v) for v in vectors[0]] if vectors else []})


# -- running models --------------------------------------------------------------------------


@router.get("/api/ps")
async def ps(request: Request) -> Response:
    rows = []
    for ref, spec, expires, _runner in engine(request).scheduler.running():
        rows.append({
            "name": ref.name, "model": ref.name, "size": ref.size, "digest": ref.digest,
            "details": ref.details, "expires_at": expires_at(expires), "size_vram": 0,
            "context_length": spec.num_ctx,
        })
    return json_response({"models": rows})


def install(app: FastAPI) -> None:
    """Add the inference routes to `app` (called by server.app.create_app), and unload every
    model when the app shuts down (wrapping whatever lifespan the app has)."""
    app.include_router(router)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                await shutdown(app)

    app.router.lifespan_context = lifespan


async def shutdown(app: FastAPI) -> None:
    """Unload every model (called from the app's lifespan on shutdown)."""
    eng: Optional[Engine] = getattr(app.state, "engine", None)
    if eng is not None:
        await eng.scheduler.close()
