"""NDJSON framing: errors before the first byte are HTTP errors, after it one more error line."""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.scheduler import QueueFull
from server.streaming import RequestError, aggregate_response, merge_chat, merge_generate, ndjson_response

closed: list[str] = []


def producer(name: str, items: list, fail_at: int | None = None, exc: Exception | None = None):
    async def gen():
        try:
            for i, item in enumerate(items):
                if i == fail_at:
                    raise exc
                yield item
            if fail_at == len(items):
                raise exc
        finally:
            closed.append(name)

    return gen()


app = FastAPI()


@app.post("/ok")
async def ok():
    return await ndjson_response(producer("ok", [{"response": "a", "done": False}, {"response": "", "done": True}]))


@app.post("/early")
async def early():
    return await ndjson_response(producer("early", [{"x": 1}], 0, RequestError("model 'x' not found", 404)))


@app.post("/busy")
async def busy():
    return await ndjson_response(producer("busy", [{"x": 1}], 0, QueueFull()))


@app.post("/late")
async def late():
    return await ndjson_response(producer("late", [{"response": "a", "done": False}], 1, RuntimeError("runner died")))


@app.post("/agg")
async def agg():
    chunks = [{"model": "m", "response": "he", "done": False}, {"model": "m", "response": "llo", "done": False},
              {"model": "m", "response": "", "done": True, "done_reason": "stop", "eval_count": 2}]
    return await aggregate_response(producer("agg", chunks), merge_generate)


@app.post("/agg-error")
async def agg_error():
    return await aggregate_response(producer("agg-error", [{"a": 1}], 1, RuntimeError("boom")), merge_generate)


client = TestClient(app, base_url="http://localhost")


def lines(resp):
    return [orjson.loads(line) for line in resp.content.splitlines() if line]


def test_stream_is_ndjson_and_closes_the_producer():
    resp = client.post("/ok")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    assert lines(resp) == [{"response": "a", "done": False}, {"response": "", "done": True}]
    assert "ok" in closed


def test_error_before_first_byte_is_a_status_and_error_body():
    resp = client.post("/early")
    assert resp.status_code == 404 and resp.json() == {"error": "model 'x' not found"}
    assert resp.headers["content-type"].startswith("application/json")
    assert "early" in closed


def test_queue_full_is_503_with_ollamas_message():
    resp = client.post("/busy")
    assert resp.status_code == 503
    assert resp.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}


def test_error_after_first_byte_is_one_more_line():
    resp = client.post("/late")
    assert resp.status_code == 200
    assert lines(resp) == [{"response": "a", "done": False}, {"error": "runner died"}]


def test_stream_false_aggregates_into_the_final_chunk():
    resp = client.post("/agg")
    assert resp.status_code == 200
    assert resp.json() == {"model": "m", "response": "hello", "done": True, "done_reason": "stop", "eval_count": 2}


def test_stream_false_error_is_a_status():
    resp = client.post("/agg-error")
    assert resp.status_code == 500 and resp.json() == {"error": "boom"}


def test_merge_chat_concatenates_content_and_tool_calls():
    call = {"function": {"name": "f", "arguments": {}}}
    chunks = [
        {"message": {"role": "assistant", "content": "a"}, "done": False},
        {"message": {"role": "assistant", "content": "", "tool_calls": [call]}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"},
    ]
    assert merge_chat(chunks) == {
        "message": {"role": "assistant", "content": "a", "tool_calls": [call]}, "done": True, "done_reason": "stop"}
