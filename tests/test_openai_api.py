"""The OpenAI-compatible API through the real `openai` SDK against a real `stack serve` (tiny GGUF).

API shape, streaming, usage, errors and CORS; the same requests through the official `ollama`
client give the same text, because both APIs run the same internal request on the same engine.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import struct
import threading
from pathlib import Path

import httpx
import ollama
import openai

from tests.support.formats import NEVER_DONE
import pytest

from tests.support.server import start_server

TEMPLATE = "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: "
TOOLS_TEMPLATE = ("{{ if .Tools }}tools: {{ range .Tools }}{{ . }} {{ end }}\n{{ end }}"
                  "{{ range .Messages }}{{ .Role }}: {{ if .ToolCalls }}{{ range .ToolCalls }}"
                  '{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}'
                  "{{ else }}{{ .Content }}{{ end }}\n{{ end }}assistant: ")
GREEDY = {"temperature": 0, "seed": 1}


def create_tiny(url: str, gguf: Path, name: str = "tiny", template: str = TEMPLATE) -> None:
    client = ollama.Client(host=url)
    digest = client.create_blob(gguf)
    assert client.create(model=name, files={"tiny.gguf": digest}, template=template).status == "success"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_gguf):
    with start_server(tmp_path_factory.mktemp("models"), env={"OLLAMA_CONTEXT_LENGTH": "512"}) as srv:
        create_tiny(srv.url, tiny_gguf)
        create_tiny(srv.url, tiny_gguf, "tiny-tools", TOOLS_TEMPLATE)
        yield srv


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def native(server):
    return ollama.Client(host=server.url, timeout=120)


USER = [{"role": "user", "content": "hello"}]


# -- models ------------------------------------------------------------------------------------


def test_models_list_and_retrieve(oai, native):
    ids = [m.id for m in oai.models.list()]
    assert ids == [m.model for m in native.list().models] == ["tiny-tools:latest", "tiny:latest"]  # newest first
    model = oai.models.retrieve("tiny")
    assert (model.id, model.object, model.owned_by) == ("tiny", "model", "library")
    listed = {m.model: m.modified_at.timestamp() for m in native.list().models}
    assert abs(model.created - listed["tiny:latest"]) < 1
    assert oai.models.retrieve("library/tiny:latest").id == "library/tiny:latest"
    with pytest.raises(openai.NotFoundError) as info:
        oai.models.retrieve("missing")
    assert info.value.body == {"message": "model 'missing' not found", "type": "not_found_error",
                               "param": "model", "code": "model_not_found"}


# -- chat --------------------------------------------------------------------------------------


def test_chat_completion_matches_native_chat(oai, native):
    resp = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=6, **GREEDY)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-") and resp.model == "tiny"
    choice = resp.choices[0]
    assert (choice.index, choice.message.role, choice.finish_reason) == (0, "assistant", "length")
    assert resp.usage.completion_tokens == 6
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 6
    # the rendered prompt is "user: hello\nassistant: ": every token counts, cached or not
    again = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=6, **GREEDY)
    assert again.usage.prompt_tokens == resp.usage.prompt_tokens
    same = native.chat(model="tiny", messages=USER, options={"num_predict": 6, "top_p": 1.0, **GREEDY})
    assert choice.message.content == same.message.content != ""
    assert resp.usage.completion_tokens == same.eval_count


def test_streamed_chat_with_usage_is_the_same_text(oai):
    whole = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=6, **GREEDY)
    chunks = list(oai.chat.completions.create(model="tiny", messages=USER, max_tokens=6, stream=True,
                                              stream_options={"include_usage": True}, **GREEDY))
    *content, finish, usage = chunks
    assert content[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content[1:])
    assert "".join(c.choices[0].delta.content or "" for c in content) == whole.choices[0].message.content
    assert all(c.choices[0].finish_reason is None for c in content)
    assert finish.choices[0].finish_reason == "length" and finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.completion_tokens == 6
    assert usage.usage.prompt_tokens == whole.usage.prompt_tokens
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_stream_is_server_sent_events_ending_in_done(server):
    body = {"model": "tiny", "messages": USER, "max_tokens": 3, "stream": True, **GREEDY}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
    assert "usage" not in json.loads(events[-2][6:])  # no include_usage: no usage chunk


def test_chat_parameters_reach_the_sampler(oai):
    stopped = oai.chat.completions.create(model="tiny", messages=USER, max_completion_tokens=40, **GREEDY)
    text = stopped.choices[0].message.content
    assert len(text) > 2
    stop = text[1:3]  # a sequence the greedy answer is known to contain
    cut = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=40, stop=[stop], **GREEDY)
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    a = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=1.5, seed=7)
    b = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=8, temperature=1.5, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content
    penalised = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=40, frequency_penalty=2,
                                            presence_penalty=2, **GREEDY)
    assert penalised.choices[0].message.content != text


def test_message_forms_all_reach_the_template(oai):
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ]
    resp = oai.chat.completions.create(model="tiny", messages=messages, extra_body={"_debug_render_only": True})
    assert resp.model_extra["_debug_info"]["rendered_template"] == (
        "system: be brief\nuser: part one\npart two\nassistant: ok\nuser: again\nassistant: ")
    assert resp.choices[0].finish_reason is None and resp.usage.total_tokens == 0
    completion = oai.completions.create(model="tiny", prompt="hi", extra_body={"_debug_render_only": True})
    assert completion.model_extra["_debug_info"]["rendered_template"] == "user: hi\nassistant: "


def test_json_schema_response_format_constrains_the_output(oai):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    resp = oai.chat.completions.create(
        model="tiny", messages=USER, max_tokens=30, **GREEDY,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
    assert json.loads(resp.choices[0].message.content) in ({"ok": True}, {"ok": False})


NOW = {"type": "function", "function": {"name": "now", "description": "The time",
                                       "parameters": {"type": "object", "properties": {},
                                                      "additionalProperties": False}}}
ROLL = {"type": "function", "function": {"name": "roll", "parameters": {
    "type": "object", "properties": {"sides": {"type": "integer", "enum": [6, 20]}}, "required": ["sides"],
    "additionalProperties": False}}}


@pytest.mark.parametrize("choice,name", [
    ("required", None),
    ({"type": "function", "function": {"name": "now"}}, "now"),
    ({"type": "function", "function": {"name": "roll"}}, "roll"),
])
def test_a_forced_tool_choice_answers_with_a_call(oai, choice, name):
    resp = oai.chat.completions.create(model="tiny-tools", messages=USER, tools=[NOW, ROLL], tool_choice=choice,
                                       max_tokens=60, **GREEDY)
    c = resp.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert name is None or call.function.name == name
    args = json.loads(call.function.arguments)
    assert args == {} if call.function.name == "now" else args in ({"sides": 6}, {"sides": 20})
    streamed = list(oai.chat.completions.create(model="tiny-tools", messages=USER, tools=[NOW, ROLL],
                                                tool_choice=choice, max_tokens=60, stream=True, **GREEDY))
    calls = [tc for ch in streamed for tc in (ch.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name, tc.function.arguments) for tc in calls] == [
        (0, call.function.name, call.function.arguments)]
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


def test_with_tool_choice_auto_a_call_in_the_answer_is_parsed(oai):
    # the model's answer is held to a call's JSON by response_format, so the tool-call parser
    # (Ollama's rules: this template's calls start with "{") has a call to find
    fmt = {"type": "json_schema", "json_schema": {"name": "call", "schema": {
        "type": "object", "properties": {"name": {"type": "string", "enum": ["roll"]},
                                         "arguments": ROLL["function"]["parameters"]},
        "required": ["name", "arguments"], "additionalProperties": False}}}
    resp = oai.chat.completions.create(model="tiny-tools", messages=USER, tools=[NOW, ROLL], response_format=fmt,
                                       max_tokens=60, **GREEDY)
    c = resp.choices[0]
    assert c.finish_reason == "tool_calls" and [t.function.name for t in c.message.tool_calls] == ["roll"]
    assert json.loads(c.message.tool_calls[0].function.arguments) in ({"sides": 6}, {"sides": 20})
    assert not c.message.content
    streamed = list(oai.chat.completions.create(model="tiny-tools", messages=USER, tools=[NOW, ROLL],
                                                response_format=fmt, max_tokens=60, stream=True, **GREEDY))
    calls = [tc for ch in streamed if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name) for tc in calls] == [(0, "roll")]
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_go_back_through_the_template(oai):
    messages = [
        {"role": "user", "content": "what time is it?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    resp = oai.chat.completions.create(model="tiny-tools", messages=messages, tools=[NOW],
                                       extra_body={"_debug_render_only": True})
    prompt = resp.model_extra["_debug_info"]["rendered_template"]
    assert prompt.startswith("tools: {")
    assert prompt.endswith('user: what time is it?\nassistant: {"name": "now", "arguments": {}}\ntool: noon\nassistant: ')
    answer = oai.chat.completions.create(model="tiny-tools", messages=messages, tools=[NOW], max_tokens=3, **GREEDY)
    assert answer.choices[0].finish_reason in ("length", "stop", "tool_calls")


# -- completions -------------------------------------------------------------------------------


def test_completions_match_native_generate(oai, native):
    resp = oai.completions.create(model="tiny", prompt="hello world", max_tokens=5, **GREEDY)
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-")
    choice = resp.choices[0]
    assert (choice.index, choice.finish_reason) == (0, "length")
    same = native.generate(model="tiny", prompt="hello world", options={"num_predict": 5, "top_p": 1.0, **GREEDY})
    assert choice.text == same.response
    assert resp.usage.completion_tokens == 5
    echoed = oai.completions.create(model="tiny", prompt="hello world", max_tokens=5, echo=True, **GREEDY)
    assert echoed.choices[0].text == "hello world" + choice.text


def test_streamed_completions_with_usage(oai):
    whole = oai.completions.create(model="tiny", prompt="hello", max_tokens=5, **GREEDY)
    chunks = list(oai.completions.create(model="tiny", prompt="hello", max_tokens=5, stream=True,
                                         stream_options={"include_usage": True}, echo=True, **GREEDY))
    *text, final, usage = chunks
    assert text[0].choices[0].text == "hello"
    assert "".join(c.choices[0].text for c in text[1:]) == whole.choices[0].text
    assert final.choices[0].finish_reason == "length"
    assert usage.choices == [] and usage.usage.completion_tokens == 5


# -- embeddings --------------------------------------------------------------------------------


def test_embeddings_float_base64_and_dimensions(oai, native):
    resp = oai.embeddings.create(model="tiny", input=["hello", "world"])
    assert resp.object == "list" and resp.model == "tiny" and [d.index for d in resp.data] == [0, 1]
    vectors = [d.embedding for d in resp.data]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0
    same = native.embed(model="tiny", input=["hello", "world"]).embeddings
    assert all(a == pytest.approx(b, abs=1e-6) for a, b in zip(vectors, same))
    # the SDK asks for base64 by default when no format is given, and decodes it itself
    decoded = oai.embeddings.create(model="tiny", input="hello").data[0].embedding
    assert decoded == pytest.approx(vectors[0], abs=1e-6)
    raw = oai.embeddings.create(model="tiny", input="hello", encoding_format="base64").data[0].embedding
    assert isinstance(raw, str)
    assert list(struct.unpack(f"<{len(vectors[0])}f", base64.b64decode(raw))) == pytest.approx(vectors[0], abs=1e-6)
    short = oai.embeddings.create(model="tiny", input="hello", dimensions=16).data[0].embedding
    assert len(short) == 16 and math.isclose(math.fsum(x * x for x in short), 1.0, rel_tol=1e-5)
    with pytest.raises(openai.BadRequestError, match="larger than the model's embedding size"):
        oai.embeddings.create(model="tiny", input="hello", dimensions=100000)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda c: c.chat.completions.create(model="missing", messages=USER),
    lambda c: c.chat.completions.create(model="missing", messages=USER, stream=True),
    lambda c: c.completions.create(model="missing", prompt="x"),
    lambda c: c.embeddings.create(model="missing", input="x"),
])
def test_unknown_model_is_not_found(oai, call):
    with pytest.raises(openai.NotFoundError) as info:
        call(oai)
    assert info.value.status_code == 404
    assert info.value.body["message"] == "model 'missing' not found"
    assert info.value.body["type"] == "not_found_error"


@pytest.mark.parametrize("kwargs,param,text", [
    ({"n": 2}, "n", "one choice"),
    ({"temperature": 3}, "temperature", "between 0 and 2"),
    ({"top_logprobs": 2}, "top_logprobs", "'logprobs' must be set to true"),
    ({"messages": []}, "messages", "too short"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
     "messages[0].content[0]", "image URLs are not currently supported"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     None, "schema"),
    ({"extra_body": {"stream": "yes"}}, "stream", "Invalid type"),
])
def test_bad_parameters_are_bad_requests(oai, kwargs, param, text):
    kwargs = {"model": "tiny", "messages": USER, "max_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(**kwargs)
    body = info.value.body
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error" and body["param"] == param and text in body["message"]


def test_a_model_without_tool_support_refuses_tools(oai):
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        oai.chat.completions.create(model="tiny", messages=USER,
                                    tools=[{"type": "function", "function": {"name": "f"}}])


@pytest.mark.parametrize("content,message", [
    (b"", "missing request body"),
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object"),
])
def test_malformed_bodies_are_400_in_openai_shape(server, content, message):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        resp = httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error"


def test_ollama_client_and_openai_client_share_the_server(oai, native):
    native.generate(model="tiny", prompt="warm", options={"num_predict": 1})
    assert [m.model for m in native.ps().models] == ["tiny:latest"]
    assert oai.chat.completions.create(model="tiny:latest", messages=USER, max_tokens=1).model == "tiny:latest"


def runners(server_pid: int) -> list[int]:
    """PIDs of the runner processes `stack serve` started (its children running server.runner)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server_pid and b"server.runner" in cmdline:
            out.append(int(stat.parent.name))
    return out


def test_a_failure_mid_stream_is_an_error_event_the_sdk_raises(oai, server):
    never = {"type": "json_schema", "json_schema": {"name": "never", "schema": NEVER_DONE}}
    stream = oai.chat.completions.create(model="tiny", messages=USER, stream=True, temperature=0,
                                         response_format=never)  # only the crash can end it
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    pids = runners(server.proc.pid)
    assert pids
    for pid in pids:  # processes of the server this module started
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as info:
        for _ in range(100000):
            next(chunks)
    assert "model runner has unexpectedly stopped" in info.value.message
    assert info.value.body["type"] == "api_error"
    # the next request loads a new runner
    assert oai.chat.completions.create(model="tiny", messages=USER, max_tokens=1).choices[0].finish_reason


# -- queue full and CORS (a second server with its own settings) ----------------------------------


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory, tiny_gguf):
    env = {"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1", "OLLAMA_CONTEXT_LENGTH": "256",
           "OLLAMA_ORIGINS": "https://chat.example.com,chrome-extension://*"}
    with start_server(tmp_path_factory.mktemp("models"), env=env) as srv:
        create_tiny(srv.url, tiny_gguf)
        yield srv


def test_queue_full_is_503_for_the_sdk(busy_server):
    url = busy_server.url + "/v1"
    # a grammar whose shortest answer never fits: only closing the stream ends it
    never = {"type": "json_schema", "json_schema": {"name": "never", "schema": NEVER_DONE}}
    endless = {"model": "tiny", "messages": USER, "temperature": 0, "response_format": never}
    with openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120) as holder:
        stream = holder.chat.completions.create(stream=True, **endless)
        first = next(iter(stream))  # the only slot is now busy until this stream is closed
        assert first.choices[0].delta.role == "assistant"
        results: list[object] = []
        lock = threading.Lock()

        def ask() -> None:
            with openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=120) as c:
                try:
                    r: object = c.chat.completions.create(model="tiny", messages=USER, max_tokens=1)
                except openai.APIStatusError as exc:
                    r = exc
            with lock:
                results.append(r)

        # one of two waiters fits in OLLAMA_MAX_QUEUE=1 and waits; the other is refused at once
        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        for _ in range(600):
            with lock:
                if results:
                    break
            threads[0].join(0.1)
        with lock:
            refused = list(results)
        assert len(refused) == 1 and isinstance(refused[0], openai.InternalServerError)
        assert refused[0].status_code == 503
        assert refused[0].body["message"] == "server busy, please try again.  maximum pending requests exceeded"
        stream.close()
    for t in threads:
        t.join(120)
    assert len(results) == 2 and not isinstance(results[1], Exception)


@pytest.mark.parametrize("origin,status", [
    ("http://localhost:5173", 204),
    ("https://chat.example.com", 204),
    ("chrome-extension://abcdefgh", 204),
    ("https://evil.example.com", 403),
])
def test_cors_preflight_follows_ollama_origins(busy_server, origin, status):
    resp = httpx.options(busy_server.url + "/v1/chat/completions",
                         headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os"})
    assert resp.status_code == status
    if status == 204:
        assert resp.headers["access-control-allow-origin"] == origin
        allowed = resp.headers["access-control-allow-headers"].lower().split(",")
        assert {"authorization", "content-type", "x-stainless-os"} <= set(allowed)
        assert "POST" in resp.headers["access-control-allow-methods"].split(",")


def test_cors_on_real_requests(busy_server, server):
    resp = httpx.get(busy_server.url + "/v1/models", headers={"Origin": "https://chat.example.com"})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert httpx.get(busy_server.url + "/api/tags", headers={"Origin": "https://evil.example.com"}).status_code == 403
    # the default server allows only local origins
    assert httpx.get(server.url + "/v1/models", headers={"Origin": "https://chat.example.com"}).status_code == 403
    local = httpx.get(server.url + "/v1/models", headers={"Origin": "http://127.0.0.1:8080"})
    assert local.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    # no Origin (curl, SDKs): no CORS headers at all
    assert "access-control-allow-origin" not in httpx.get(server.url + "/v1/models").headers
