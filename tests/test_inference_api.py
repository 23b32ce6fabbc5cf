"""The native inference routes over a real store and real llama.cpp runners (tiny GGUF)."""

from __future__ import annotations

import math
import os
import signal
import time
from datetime import datetime

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.support.inference_app import create_model, make_app


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gguf):
    root = tmp_path_factory.mktemp("models")
    app = make_app(root, OLLAMA_NUM_PARALLEL="2", OLLAMA_CONTEXT_LENGTH="256")
    with TestClient(app, base_url="http://localhost") as client:
        create_model(client, "tiny", tiny_gguf)
        create_model(client, "tiny-params", tiny_gguf, parameters={"num_ctx": 128, "temperature": 0, "num_predict": 3})
        yield client, app


def lines(resp) -> list[dict]:
    return [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]


def loaded(client) -> dict[str, dict]:
    return {m["name"]: m for m in client.get("/api/ps").json()["models"]}


def when(text: str) -> datetime:
    """An RFC 3339 time with up to 9 fractional digits."""
    main, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{main}.{(frac or '0')[:6].ljust(6, '0')}+00:00")


def raw(prompt="hello world", **kw):
    body = {"model": "tiny", "prompt": prompt, "raw": True, "options": {"num_predict": 5, "temperature": 0}}
    body.update(kw)
    return body


def test_generate_streams_ndjson_with_ollama_statistics(served):
    client, _ = served
    resp = client.post("/api/generate", json=raw())
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    chunks = lines(resp)
    *pieces, final = chunks
    assert all(c["model"] == "tiny" and c["done"] is False and "response" in c for c in pieces)
    assert final["done"] is True and final["done_reason"] in ("stop", "length") and final["response"] == ""
    assert final["eval_count"] == len(pieces) or final["eval_count"] >= len(pieces)
    assert final["prompt_eval_count"] > 0 and final["eval_duration"] > 0 and final["prompt_eval_duration"] > 0
    assert final["total_duration"] >= final["load_duration"] > 0
    assert final["created_at"].endswith("Z")
    assert "context" not in final  # raw mode has no context


def test_generate_stream_false_is_one_object_with_the_whole_text(served):
    client, _ = served
    streamed = "".join(c["response"] for c in lines(client.post("/api/generate", json=raw(options={
        "num_predict": 6, "temperature": 0, "seed": 1}))))
    resp = client.post("/api/generate", json=raw(stream=False, options={"num_predict": 6, "temperature": 0, "seed": 1}))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["done"] is True and body["response"] == streamed
    assert body["eval_count"] <= 6


def test_load_then_unload_with_empty_prompts(served):
    client, _ = served
    resp = client.post("/api/generate", json={"model": "tiny", "keep_alive": -1})
    (body,) = lines(resp)
    assert set(body) == {"model", "created_at", "response", "done", "done_reason"}  # as Ollama: no metrics
    assert body["done_reason"] == "load" and body["response"] == "" and body["done"] is True
    ps = loaded(client)["tiny:latest"]
    assert ps["model"] == "tiny:latest" and ps["size_vram"] == 0 and ps["context_length"] == 256
    assert ps["size"] > 0
    assert when(ps["expires_at"]).year > 2200  # forever: Go's now + MaxInt64 ns
    assert len(ps["digest"]) == 64 and ps["details"]["format"] == "gguf"
    resp = client.post("/api/generate", json={"model": "tiny", "keep_alive": 0, "stream": False})
    assert resp.json()["done_reason"] == "unload" and resp.json()["model"] == "tiny"
    assert set(resp.json()) == {"model", "created_at", "response", "done", "done_reason"}
    for _ in range(200):
        if "tiny:latest" not in loaded(client):
            break
        time.sleep(0.02)
    assert "tiny:latest" not in loaded(client)
    # chat's empty messages load too
    body = client.post("/api/chat", json={"model": "tiny", "messages": [], "stream": False}).json()
    assert body["done_reason"] == "load" and body["message"] == {"role": "assistant", "content": ""}


def test_keep_alive_expiry_shows_in_ps(served):
    client, _ = served
    client.post("/api/generate", json={"model": "tiny", "keep_alive": "10m", "stream": False})
    ps = loaded(client)["tiny:latest"]
    remaining = when(ps["expires_at"]).timestamp() - time.time()
    assert 500 < remaining <= 600


def test_modelfile_parameters_are_defaults_and_a_new_num_ctx_reloads(served):
    client, _ = served
    body = client.post("/api/generate", json={"model": "tiny-params", "prompt": "hello", "raw": True,
                                              "stream": False}).json()
    assert body["eval_count"] <= 3  # PARAMETER num_predict 3
    first = loaded(client)["tiny-params:latest"]
    assert first["context_length"] == 128  # PARAMETER num_ctx 128
    body = client.post("/api/generate", json={"model": "tiny-params", "prompt": "hello", "raw": True,
                                              "stream": False, "options": {"num_ctx": 64, "num_predict": 8}}).json()
    assert body["eval_count"] <= 8 and body["load_duration"] > 0
    assert loaded(client)["tiny-params:latest"]["context_length"] == 64


@pytest.mark.parametrize(
    "path, body, status, error",
    [
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("/api/generate", {"model": "", "prompt": "x"}, 404, "model '' not found"),
        ("/api/chat", {"model": "", "messages": []}, 400, "model is required"),
        ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        ("/api/generate", {"model": "bad name!", "prompt": "x"}, 400, "invalid model name"),
        ("/api/embed", {"model": "nope", "input": "x"}, 404, 'model "nope" not found, try pulling it first'),
        ("/api/embeddings", {"model": "", "prompt": "x"}, 400, "model is required"),
        ("/api/generate", {"model": "tiny", "prompt": "x", "raw": True, "system": "s"}, 400,
         "raw mode does not support template, system, or context"),
        # Ollama answers these with 500; a wrong option type is the client's mistake
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"num_ctx": "big"}}, 400,
         'option "num_ctx" must be of type integer'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"temperature": "hot"}}, 400,
         'option "temperature" must be of type float32'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"num_ctx": -5}}, 400,
         'invalid option "num_ctx": -5 is out of range'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"num_ctx": 10**9}}, 400,
         'invalid option "num_ctx": 1000000000 is out of range'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"num_predict": -7}}, 400,
         'invalid option "num_predict": -7 is out of range'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "suffix": "y"}, 400,
         "registry.ollama.ai/library/tiny:latest does not support insert"),
        ("/api/generate", {"model": "tiny", "prompt": "x", "images": ["aGVsbG8="]}, 400,
         "registry.ollama.ai/library/tiny:latest does not support vision"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
         "registry.ollama.ai/library/tiny:latest does not support tools"),
        ("/api/generate", {"model": "tiny", "prompt": "x", "keep_alive": "300"}, 400,
         'time: missing unit in duration "300"'),
        ("/api/embed", {"model": "tiny", "input": 5}, 400, "invalid input type"),
        ("/api/generate", {"model": "tiny", "prompt": "x", "top_logprobs": 21}, 400,
         "top_logprobs must be between 0 and 20"),
        ("/api/generate", {"model": "tiny", "prompt": "hello " * 300, "raw": True, "truncate": False,
                           "options": {"num_ctx": 64}}, 400,
         "the prompt is longer than the context length currently available to the model; shorten the prompt, "
         "adjust the context length in settings, or use a model with a longer context length"),
    ],
)
def test_bad_requests(served, path, body, status, error):
    client, _ = served
    resp = client.post(path, json=body)
    assert (resp.status_code, resp.json()) == (status, {"error": error})


def test_missing_body_and_bad_json(served):
    client, _ = served
    resp = client.post("/api/generate", content=b"")
    assert (resp.status_code, resp.json()) == (400, {"error": "missing request body"})
    resp = client.post("/api/chat", content=b"{nope")
    assert resp.status_code == 400 and resp.json()["error"].startswith("invalid JSON")


def test_invalid_json_schema_is_400(served):
    client, _ = served
    resp = client.post("/api/generate", json=raw(format={"type": "object", "properties": {"a": {"type": "nonsense"}}}))
    assert resp.status_code == 400 and "schema" in resp.json()["error"].lower()


def test_format_json_is_enforced(served):
    client, _ = served
    body = client.post("/api/generate", json=raw(format="json", stream=False,
                                                 options={"num_predict": 40, "temperature": 0})).json()
    text = body["response"].strip()
    assert text.startswith("{") or text.startswith("[") or text == ""


def test_embed_and_legacy_embeddings(served):
    client, _ = served
    body = client.post("/api/embed", json={"model": "tiny", "input": ["hello", "the sky is blue"]}).json()
    assert body["model"] == "tiny" and len(body["embeddings"]) == 2
    for vector in body["embeddings"]:
        assert len(vector) == 64 and math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-4)
    assert body["prompt_eval_count"] > 0 and body["total_duration"] > 0
    short = client.post("/api/embed", json={"model": "tiny", "input": "hello", "dimensions": 8}).json()
    assert len(short["embeddings"][0]) == 8
    assert math.isclose(math.fsum(v * v for v in short["embeddings"][0]), 1.0, rel_tol=1e-4)
    assert client.post("/api/embed", json={"model": "tiny", "input": []}).json() == {"model": "tiny", "embeddings": []}
    legacy = client.post("/api/embeddings", json={"model": "tiny", "prompt": "hello"}).json()
    assert len(legacy["embedding"]) == 64
    assert client.post("/api/embeddings", json={"model": "tiny", "prompt": ""}).json() == {"embedding": []}


def test_prompt_longer_than_the_context_is_truncated_not_an_error(served):
    client, _ = served
    body = client.post("/api/generate", json=raw("hello world " * 400, stream=False,
                                                 options={"num_predict": 3, "num_ctx": 64})).json()
    assert body["done"] is True and body["prompt_eval_count"] <= 64


def test_a_crashed_runner_is_a_500_and_the_next_request_reloads(served):
    client, app = served
    client.post("/api/generate", json={"model": "tiny", "stream": False})
    (_, _, _, runner), = [r for r in app.state.engine.scheduler.running() if r[0].name == "tiny:latest"]
    os.kill(runner.pid, signal.SIGKILL)
    for _ in range(200):
        if not runner.alive:
            break
        time.sleep(0.02)
    body = client.post("/api/generate", json=raw(stream=False)).json()
    assert body["done"] is True  # the dead runner was replaced before use
    (_, _, _, again), = [r for r in app.state.engine.scheduler.running() if r[0].name == "tiny:latest"]
    assert again is not runner and again.alive


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from gguf import PoolingType

    from tests.support.tiny_gguf import write_tiny_llama

    gguf = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "embed.gguf", pooling_type=PoolingType.MEAN)
    app = make_app(tmp_path_factory.mktemp("models"), OLLAMA_NUM_PARALLEL="4")
    with TestClient(app, base_url="http://localhost") as client:
        create_model(client, "tiny-embed", gguf)
        yield client


def test_embedding_models_embed_but_do_not_generate(embedder):
    resp = embedder.post("/api/generate", json={"model": "tiny-embed", "prompt": "hi"})
    assert (resp.status_code, resp.json()) == (400, {"error": '"tiny-embed" does not support generate'})
    resp = embedder.post("/api/chat", json={"model": "tiny-embed", "messages": [{"role": "user", "content": "hi"}]})
    assert (resp.status_code, resp.json()) == (400, {"error": '"tiny-embed" does not support chat'})
    body = embedder.post("/api/embed", json={"model": "tiny-embed", "input": ["a b", "the sky"]}).json()
    assert len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == 64
    (m,) = embedder.get("/api/ps").json()["models"]
    assert m["name"] == "tiny-embed:latest"


def test_load_timeout_is_a_500_naming_it(tmp_path, tiny_gguf):
    app = make_app(tmp_path / "models", OLLAMA_LOAD_TIMEOUT="1ms")  # no process starts that fast
    with TestClient(app, base_url="http://localhost") as client:
        create_model(client, "tiny", tiny_gguf)
        resp = client.post("/api/generate", json={"model": "tiny", "prompt": "hi"})
        assert resp.status_code == 500 and "timed out" in resp.json()["error"]
        assert client.get("/api/ps").json() == {"models": []}


def test_shift_false_stops_when_the_context_is_full(served):
    client, _ = served
    body = client.post("/api/generate", json={"model": "tiny", "prompt": "hello", "raw": True, "stream": False,
                                              "shift": False, "options": {"num_ctx": 64, "temperature": 0}}).json()
    assert body["done_reason"] == "length" and body["eval_count"] < 64  # greedy never ends otherwise


def test_an_oversized_body_is_413(served):
    client, _ = served
    resp = client.post("/api/generate", json={"model": "tiny", "prompt": "x" * (33 << 20)})
    assert resp.status_code == 413 and "larger than" in resp.json()["error"]
