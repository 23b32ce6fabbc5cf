"""NDJSON streaming with Ollama's error framing, and `stream: false` aggregation.

A producer is an async iterator of plain dicts (one per chunk). `ndjson_response` pulls the
first chunk before answering, so an error raised before anything was produced becomes a normal
`{"error": ...}` answer with its status; an error after the first byte becomes one more NDJSON
line `{"error": ...}` (the status is already 200), which is what Ollama's clients expect.

Serialisation is `orjson.dumps(chunk) + b"\\n"` per chunk: no pydantic on the per-token path.
When the client goes away, Starlette cancels the response task; the producer's `aclose()` runs
its `finally` blocks, which is how a generation is stopped on disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import orjson
from starlette.responses import Response, StreamingResponse

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
JSON = "application/json; charset=utf-8"


class RequestError(Exception):
    """A failure with an HTTP status and Ollama's message (`{"error": message}`)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def error_response(message: str, status: int) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def _as_error(exc: BaseException) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    status, message = getattr(exc, "status", None), getattr(exc, "message", None)
    if isinstance(status, int) and isinstance(message, str):  # server.errors / scheduler errors
        return RequestError(message, status)
    log.exception("inference failed", exc_info=exc)
    return RequestError(str(exc) or exc.__class__.__name__, 500)


async def ndjson_response(
    chunks: AsyncIterator[dict[str, Any]], receive: Optional[Callable[[], Awaitable[dict[str, Any]]]] = None
) -> Response:
    """Stream `chunks` as NDJSON, with Ollama's error framing before and after the first byte.

    With `receive` (the request's ASGI receive, its body already read), a client that goes away
    before the first chunk (queued for a slot, or waiting for a load) is dropped at once (499).
    """
    try:
        if receive is None:
            first = await chunks.__anext__()
        else:
            first = await _unless_disconnected(chunks.__anext__(), receive)
    except StopAsyncIteration:
        await _close(chunks)
        return Response(b"", media_type=NDJSON)
    except ClientGone:
        await _close(chunks)
        return error_response("request canceled", 499)
    except Exception as exc:  # noqa: BLE001 - becomes the HTTP answer
        await _close(chunks)
        err = _as_error(exc)
        return error_response(err.message, err.status)

    async def body() -> AsyncIterator[bytes]:
        dumps = orjson.dumps
        try:
            yield dumps(first) + b"\n"
            async for chunk in chunks:
                yield dumps(chunk) + b"\n"
        except Exception as exc:  # noqa: BLE001 - framed as Ollama does after the first byte
            yield dumps({"error": _as_error(exc).message}) + b"\n"
        finally:
            await _close(chunks)

    return StreamingResponse(body(), media_type=NDJSON)


async def aggregate_response(
    chunks: AsyncIterator[dict[str, Any]],
    merge: Callable[[list[dict[str, Any]]], dict[str, Any]],
    receive: Optional[Callable[[], Awaitable[dict[str, Any]]]] = None,
) -> Response:
    """`stream: false`: drain the producer and answer one JSON object built by `merge`.

    With `receive` (the request's ASGI receive, its body already read), a client that goes away
    stops the producer at once, as a streaming response would (499 `request canceled`).
    """
    collected: list[dict[str, Any]] = []

    async def drain() -> None:
        async for chunk in chunks:
            collected.append(chunk)

    try:
        if receive is None:
            await drain()
        else:
            await _unless_disconnected(drain(), receive)
    except ClientGone:
        return error_response("request canceled", 499)
    except Exception as exc:  # noqa: BLE001 - becomes the HTTP answer
        err = _as_error(exc)
        return error_response(err.message, err.status)
    finally:
        await _close(chunks)
    if not collected:
        return error_response("no response", 500)
    return json_response(merge(collected))


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def _unless_disconnected(work: Awaitable[Any], receive: Callable[[], Awaitable[dict[str, Any]]]) -> Any:
    async def watch() -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - the work was abandoned on purpose
        pass
    raise ClientGone()


def merge_generate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The final chunk with `response` (and `thinking`, `logprobs`) replaced by the whole text."""
    final = dict(chunks[-1])
    final["response"] = "".join(c.get("response", "") for c in chunks)
    thinking = "".join(c.get("thinking", "") for c in chunks)
    if thinking:
        final["thinking"] = thinking
    _merge_logprobs(final, chunks)
    return final


def merge_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The final chunk with message content, thinking, tool calls and logprobs concatenated."""
    final = dict(chunks[-1])
    message = dict(final.get("message") or {"role": "assistant"})
    message["content"] = "".join((c.get("message") or {}).get("content", "") for c in chunks)
    thinking = "".join((c.get("message") or {}).get("thinking", "") for c in chunks)
    if thinking:
        message["thinking"] = thinking
    calls = [tc for c in chunks for tc in (c.get("message") or {}).get("tool_calls", ())]
    if calls:
        message["tool_calls"] = calls
    final["message"] = message
    _merge_logprobs(final, chunks)
    return final


def _merge_logprobs(final: dict[str, Any], chunks: list[dict[str, Any]]) -> None:
    logprobs = [lp for c in chunks for lp in c.get("logprobs", ())]
    if logprobs:
        final["logprobs"] = logprobs


async def _close(chunks: AsyncIterator[Any]) -> None:
    aclose: Optional[Callable[[], Any]] = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - closing must not mask the answer
            log.debug("closing a producer failed", exc_info=True)
