"""Prompts the inference routes build: templates, system prompts, the Jinja fallback, truncation.

`_debug_render_only` (as in Ollama) answers the rendered prompt instead of generating.
"""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.support.inference_app import create_model, make_app
from tests.support.tiny_gguf import write_tiny_llama

GO_TEMPLATE = "{{ if .System }}<<{{ .System }}>>{{ end }}[U]{{ .Prompt }}[A]"
MESSAGES_TEMPLATE = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}<assistant>"
JINJA = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
TOOLS_TEMPLATE = ("{{ if .Tools }}TOOLS {{ json .Tools }}\n{{ end }}"
                  "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}<assistant>")


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_gguf):
    root = tmp_path_factory.mktemp("models")
    jinja_gguf = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "jinja.gguf", chat_template=JINJA)
    app = make_app(root, OLLAMA_NUM_PARALLEL="1", OLLAMA_CONTEXT_LENGTH="512", OLLAMA_MAX_LOADED_MODELS="1")
    with TestClient(app, base_url="http://localhost") as c:
        create_model(c, "plain", tiny_gguf)
        create_model(c, "go", tiny_gguf, template=GO_TEMPLATE, system="be brief")
        create_model(c, "msgs", tiny_gguf, template=MESSAGES_TEMPLATE, system="sys",
                     messages=[{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}])
        create_model(c, "jinja", jinja_gguf)
        create_model(c, "tools", tiny_gguf, template=TOOLS_TEMPLATE)
        yield c


def rendered(client, path: str, body: dict) -> str:
    resp = client.post(path, json={**body, "_debug_render_only": True})
    assert resp.status_code == 200, resp.text
    return resp.json()["_debug_info"]["rendered_template"]


@pytest.mark.parametrize(
    "body, prompt",
    [
        ({"model": "plain", "prompt": "hi"}, "hi"),
        ({"model": "plain", "prompt": "hi", "system": "ignored by {{ .Prompt }}"}, "hi"),
        ({"model": "go", "prompt": "hi"}, "<<be brief>>[U]hi[A]"),
        ({"model": "go", "prompt": "hi", "system": "other"}, "<<other>>[U]hi[A]"),
        ({"model": "go", "prompt": "hi", "template": "T:{{ .Prompt }}"}, "T:hi"),
        ({"model": "msgs", "prompt": "hi"}, "<system>sys<user>earlier<assistant>ok<user>hi<assistant>"),
        ({"model": "jinja", "prompt": "hi", "system": "s"}, "<s><|system|>s<|user|>hi<|assistant|>"),
    ],
)
def test_generate_prompt(client, body, prompt):
    assert rendered(client, "/api/generate", body) == prompt


@pytest.mark.parametrize(
    "body, prompt",
    [
        ({"model": "msgs", "messages": [{"role": "user", "content": "hi"}]},
         "<system>sys<user>earlier<assistant>ok<user>hi<assistant>"),
        ({"model": "msgs", "messages": [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]},
         "<user>earlier<assistant>ok<system>mine<user>hi<assistant>"),
        ({"model": "jinja", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                         {"role": "user", "content": "c"}]},
         "<s><|user|>a<|assistant|>b<|user|>c<|assistant|>"),
        ({"model": "go", "messages": [{"role": "user", "content": "hi"}]}, "<<be brief>>[U]hi[A]"),
    ],
)
def test_chat_prompt(client, body, prompt):
    assert rendered(client, "/api/chat", body) == prompt


def test_chat_tools_reach_the_template(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "w",
                                               "parameters": {"type": "object", "properties": {}}}}]
    text = rendered(client, "/api/chat", {"model": "tools", "messages": [{"role": "user", "content": "hi"}],
                                          "tools": tools})
    assert text.startswith("TOOLS [") and '"get_weather"' in text and text.endswith("<user>hi<assistant>")


def test_a_long_chat_drops_the_oldest_messages_but_keeps_system_and_latest(client):
    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"question {i} " + "word " * 20},
                    {"role": "assistant", "content": f"answer {i} " + "word " * 20}]
    messages = [{"role": "system", "content": "SYSTEM"}, *history, {"role": "user", "content": "LAST"}]
    for model in ("msgs", "jinja"):
        text = rendered(client, "/api/chat", {"model": model, "messages": messages, "options": {"num_ctx": 256}})
        assert "SYSTEM" in text and "LAST" in text and "question 0 " not in text
        assert len(text) < 256 * 8
        full = rendered(client, "/api/chat", {"model": model, "messages": messages, "truncate": False,
                                              "options": {"num_ctx": 256}})
        assert "question 0 " in full


def test_chat_generates_with_a_template_and_generate_returns_context(client):
    resp = client.post("/api/chat", json={"model": "msgs", "messages": [{"role": "user", "content": "hello"}],
                                          "options": {"num_predict": 4, "temperature": 0}})
    chunks = [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]
    assert chunks[-1]["done"] is True and chunks[-1]["message"]["role"] == "assistant"
    assert all(c["message"]["role"] == "assistant" for c in chunks)
    body = client.post("/api/generate", json={"model": "go", "prompt": "hello", "stream": False,
                                              "options": {"num_predict": 4, "temperature": 0}}).json()
    assert isinstance(body["context"], list) and len(body["context"]) >= body["prompt_eval_count"]
    # the context of an answer continues the conversation: it is put in front of the next prompt
    follow = client.post("/api/generate", json={"model": "go", "prompt": "more", "context": body["context"],
                                                "_debug_render_only": True}).json()
    assert follow["_debug_info"]["rendered_template"].endswith("<<be brief>>[U]more[A]")
    assert len(follow["_debug_info"]["rendered_template"]) > len("<<be brief>>[U]more[A]")


def test_template_errors_are_400(client):
    resp = client.post("/api/generate", json={"model": "go", "prompt": "x", "template": "{{ .Prompt "})
    assert resp.status_code == 400 and resp.json()["error"].startswith("template error:")


WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}}}}}]
# A grammar that makes even the random tiny model answer with exactly one tool call.
CALL_SCHEMA = {"type": "object", "properties": {
    "name": {"enum": ["get_weather"]},
    "arguments": {"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]}},
    "required": ["name", "arguments"]}


@pytest.mark.parametrize("stream", [True, False])
def test_tool_calls_are_parsed_from_the_output(client, stream):
    body = {"model": "tools", "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": WEATHER,
            "format": CALL_SCHEMA, "stream": stream, "options": {"num_predict": 60, "temperature": 0}}
    resp = client.post("/api/chat", json=body)
    assert resp.status_code == 200, resp.text
    if stream:
        chunks = [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]
        calls = [tc for c in chunks for tc in c["message"].get("tool_calls", [])]
        content = "".join(c["message"]["content"] for c in chunks)
        assert chunks[-1]["done"] is True
    else:
        message = resp.json()["message"]
        calls, content = message.get("tool_calls", []), message["content"]
    assert len(calls) == 1 and content.strip() == ""
    call = calls[0]
    assert call["function"]["name"] == "get_weather" and call["function"]["arguments"] == {"city": "Paris"}
    assert call["function"]["index"] == 0 and call["id"].startswith("call_")


def test_max_loaded_models_evicts_the_least_recently_used(client):
    # this module's server runs with OLLAMA_MAX_LOADED_MODELS=1; runners are keyed by model file
    # (as Ollama's), so two names of one GGUF share one runner: "plain" and "jinja" do not
    # (ps names a shared runner after the model that loaded it, as Ollama does)
    for model in ("plain", "jinja", "plain"):
        client.post("/api/generate", json={"model": model, "stream": False})
        names = [m["name"] for m in client.get("/api/ps").json()["models"]]
        assert len(names) == 1 and (names == ["jinja:latest"]) == (model == "jinja")
