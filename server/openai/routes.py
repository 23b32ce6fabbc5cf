"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Thin, like the native routes: parse the body into `server.openai.types`, convert it to the same
internal request the native routes build (`server.openai.convert`), run it on the same engine
(`server.routes.inference.engine`), and shape the engine's events into OpenAI objects. Streams
are server-sent events, `data: <json>` per chunk and `data: [DONE]` at the end.

Errors are OpenAI's shape with the native status: a failure before the first event is the
HTTP answer (404 unknown model, 400 bad parameters, 503 queue full, ...); one after the stream
has started is a last `data: {"error": {...}}` event, which the SDKs raise as `APIError`.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response, StreamingResponse

from server import errors as server_errors
from server.inference import l2_normalise, now_ns
from server.openai import convert
from server.openai.errors import OpenAIError, error_response, from_exception
from server.openai.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, validation_error
from server.routes.inference import engine
from toolchain.names import parse_name

router = APIRouter()

JSON = "application/json; charset=utf-8"
SSE = "text/event-stream"
NOT_FOUND = "model '{name}' not found"

M = TypeVar("M", bound=BaseModel)


async def parse(request: Request, model: type[M]) -> M:
    body = await request.body()
    if not body.strip():
        raise OpenAIError("missing request body", 400)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OpenAIError(f"invalid JSON in request body: {exc}", 400) from None
    if not isinstance(data, dict):
        raise OpenAIError("invalid request: expected a JSON object", 400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_error(exc)
        raise OpenAIError(message, 400, param=param) from None


def json_response(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type=JSON)


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


async def sse_response(events: AsyncIterator[tuple[str, Any]],
                       feed: Callable[[str, Any], list[dict[str, Any]]]) -> Response:
    """Stream `feed(event)` chunks as SSE. The first event is awaited before answering, so a
    failure to start (unknown model, full queue, bad option) keeps its status."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as exc:  # noqa: BLE001 - becomes the HTTP answer
        await _close(events)
        return error_response(from_exception(exc))

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                for chunk in feed(*first):
                    yield _sse(chunk)
                async for kind, value in events:
                    for chunk in feed(kind, value):
                        yield _sse(chunk)
            yield b"data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - after the first byte, the error is an event
            yield _sse(from_exception(exc).body())
        finally:
            await _close(events)

    return StreamingResponse(body(), media_type=SSE, headers={"Cache-Control": "no-cache"})


async def collect(events: AsyncIterator[tuple[str, Any]]) -> list[tuple[str, Any]]:
    try:
        return [event async for event in events]
    finally:
        await _close(events)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, ChatCompletionRequest)
        plan = convert.chat_request(req)
    except OpenAIError as exc:
        return error_response(exc)
    events = engine(request).generate(plan.job, started)
    id, created = convert.new_id("chatcmpl-"), int(time.time())
    if plan.stream:
        stream = convert.ChatStream(id, created, req.model, include_usage=plan.include_usage,
                                    parallel_tool_calls=plan.parallel_tool_calls, forced_call=plan.forced_call,
                                    logprobs=plan.logprobs)
        return await sse_response(events, stream.feed)
    try:
        collected = await collect(events)
    except Exception as exc:  # noqa: BLE001 - mapped to OpenAI's error shape
        return error_response(from_exception(exc))
    return json_response(convert.chat_completion(id, created, req.model, collected,
                                                 parallel_tool_calls=plan.parallel_tool_calls,
                                                 forced_call=plan.forced_call, logprobs=plan.logprobs))


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, CompletionRequest)
        plan = convert.completion_request(req)
    except OpenAIError as exc:
        return error_response(exc)
    events = engine(request).generate(plan.job, started)
    id, created = convert.new_id("cmpl-"), int(time.time())
    if plan.stream:
        stream = convert.CompletionStream(id, created, req.model, include_usage=plan.include_usage, echo=plan.echo,
                                          logprobs=req.logprobs)
        return await sse_response(events, stream.feed)
    try:
        collected = await collect(events)
    except Exception as exc:  # noqa: BLE001 - mapped to OpenAI's error shape
        return error_response(from_exception(exc))
    return json_response(convert.text_completion(id, created, req.model, collected, echo=plan.echo,
                                                 logprobs=req.logprobs))


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    started = now_ns()
    try:
        req = await parse(request, EmbeddingRequest)
        plan = convert.embedding_request(req)
        vectors, count, _ = await engine(request).embed(
            plan.model, plan.inputs, truncate=True, options={}, keep_alive=None, started=started,
            not_found=NOT_FOUND)
        if plan.dimensions is not None and vectors and plan.dimensions > len(vectors[0]):
            raise OpenAIError(f"dimensions {plan.dimensions} is larger than the model's embedding size "
                              f"{len(vectors[0])}", 400, param="dimensions")
        normalised = [l2_normalise(v, plan.dimensions) for v in vectors]
    except Exception as exc:  # noqa: BLE001 - mapped to OpenAI's error shape
        return error_response(from_exception(exc))
    return json_response(convert.embedding_list(plan.model, normalised, count, plan.base64))


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    entries = request.app.state.store.list()
    entries.sort(key=lambda e: e.manifest.mtime or 0, reverse=True)  # newest first, as Ollama lists
    return json_response(convert.model_list(
        convert.model_object(e.name.display_shortest(), e.manifest.mtime or 0, e.name.namespace) for e in entries))


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> Response:
    name = parse_name(model)
    if not name.is_valid():
        return error_response(OpenAIError("invalid model name", 400, param="model"))
    try:
        manifest = request.app.state.store.read_manifest(name)
    except server_errors.ModelNotFound:
        return error_response(OpenAIError(NOT_FOUND.format(name=model), 404, param="model", code="model_not_found"))
    except server_errors.ServerError as exc:
        return error_response(from_exception(exc))
    return json_response(convert.model_object(model, manifest.mtime or 0, name.namespace))


def install(app: FastAPI) -> None:
    """Add the OpenAI-compatible routes to `app` (called by server.app.create_app)."""
    app.include_router(router)
