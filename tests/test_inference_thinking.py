"""Thinking and logprobs on the native routes, over a real store and real llama.cpp (tiny GGUF).

Random weights never write a thinking tag on their own, so the wiring is tested where the text
is deterministic: the template opens the block (`{{ if .Think }}<think>{{ end }}`, so the parser
starts inside it), and either a `format` grammar or a "chain" model (tests/support/tiny_gguf.py,
whose next token depends on the last one only) makes the model write the closing tag itself, one
character (token) per chunk. The split rules themselves are tested in tests/test_thinking.py.
"""

from __future__ import annotations

import math

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.support.inference_app import create_model, make_app
from tests.support.tiny_gguf import THINKING_CHAIN, write_tiny_llama

# Ollama's pattern: a .Thinking block inside a range over .Messages gives the tags; the prompt
# ends inside an opened block when the request thinks.
THINKER = ("{{ range .Messages }}{{ .Role }}: {{ .Content }}"
           "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}\n{{ end }}"
           "level={{ .ThinkLevel }} set={{ .IsThinkSet }}\nassistant: {{ if .Think }}<think>{{ end }}")
PLAIN = "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: "
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}
# The model's whole answer is this JSON string: `"a</think>  b c"` (quotes included).
CLOSES = {"type": "string", "enum": ["a</think>  b c"]}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_gguf):
    app = make_app(tmp_path_factory.mktemp("models"), OLLAMA_NUM_PARALLEL="2", OLLAMA_CONTEXT_LENGTH="256")
    with TestClient(app, base_url="http://localhost") as c:
        create_model(c, "tiny", tiny_gguf, template=PLAIN)
        create_model(c, "thinker", tiny_gguf, template=THINKER)
        chain = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "chain.gguf", chain=THINKING_CHAIN)
        create_model(c, "chain", chain, template=THINKER)  # writes " o</think> o</think> o..." after "<think>"
        yield c


def lines(resp) -> list[dict]:
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in resp.content.splitlines() if line.strip()]


def rendered(client, body: dict) -> str:
    return client.post("/api/chat", json={**body, "_debug_render_only": True}).json()["_debug_info"]["rendered_template"]


def test_capability_and_template_values(client):
    assert "thinking" in client.post("/api/show", json={"model": "thinker"}).json()["capabilities"]
    # unset on a thinking model is think: true (Ollama), which the template sees
    assert rendered(client, {"model": "thinker", "messages": USER}).endswith("level=medium set=true\nassistant: <think>")
    assert rendered(client, {"model": "thinker", "messages": USER, "think": "low"}).endswith(
        "level=low set=true\nassistant: <think>")
    assert rendered(client, {"model": "thinker", "messages": USER, "think": False}).endswith(
        "level= set=true\nassistant: ")
    # an earlier assistant turn's thinking goes back into the prompt inside the tags
    history = [*USER, {"role": "assistant", "content": "yes", "thinking": "hmm"}, {"role": "user", "content": "and?"}]
    assert "assistant: yes<think>hmm</think>\n" in rendered(client, {"model": "thinker", "messages": history})


@pytest.mark.parametrize("body, error", [
    ({"model": "tiny", "messages": USER, "think": True}, '"tiny" does not support thinking'),
    ({"model": "tiny", "messages": USER, "think": "high"}, '"tiny" does not support thinking'),
    # Ollama's messages for a value that is no ThinkValue
    ({"model": "thinker", "messages": USER, "think": "extreme"},
     'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false)'),
    ({"model": "thinker", "messages": USER, "think": 1},
     'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'),
])
def test_think_for_a_model_without_the_capability_is_400(client, body, error):
    resp = client.post("/api/chat", json=body)
    assert (resp.status_code, resp.json()) == (400, {"error": error})
    # think: false is allowed for any model (nothing to turn off)
    resp = client.post("/api/chat", json={"model": "tiny", "messages": USER, "think": False, "stream": False,
                                          "options": {"num_predict": 2}})
    assert resp.status_code == 200


def test_the_answer_inside_an_opened_block_is_thinking(client):
    """Text after `<think>` that never closes the block is all thinking."""
    body = {"model": "thinker", "prompt": "hi", "stream": False, "format": {"type": "string", "enum": ["  abc def"]},
            "options": {"num_predict": 40, **GREEDY}}
    resp = client.post("/api/generate", json=body).json()
    assert (resp["thinking"], resp["response"]) == ('"  abc def"', "")
    # unconstrained (random weights): whatever it writes is thinking, none of it answer
    body = {"model": "thinker", "messages": USER, "stream": False, "options": {"num_predict": 12, **GREEDY}}
    message = client.post("/api/chat", json=body).json()["message"]
    assert message["content"] == "" and message["thinking"].strip() and "<think>" not in message["thinking"]


def field(path: str, c: dict, name: str) -> str:
    """A chunk's `thinking` or answer (`response`, which chat calls message.content)."""
    if path == "/api/chat":
        return (c.get("message") or {}).get("content" if name == "response" else name, "")
    return c.get(name, "")


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_the_model_s_own_closing_tag_separates_thinking_from_content(client, path):
    """The chain model writes " o</think> o" token by token: the tag arrives split over chunks."""
    body = {"model": "chain", "options": {"num_predict": 12}}
    body.update({"messages": USER} if path == "/api/chat" else {"prompt": "hi"})
    chunks = lines(client.post(path, json=body))
    assert "".join(field(path, c, "thinking") for c in chunks) == "o"  # whitespace after the tags dropped
    assert "".join(field(path, c, "response") for c in chunks) == "o"
    kinds = [("t" if field(path, c, "thinking") else "c") for c in chunks
             if field(path, c, "thinking") or field(path, c, "response")]
    assert kinds == sorted(kinds, reverse=True)  # all thinking first, then the answer
    assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] == 12
    whole = client.post(path, json={**body, "stream": False}).json()
    if path == "/api/chat":
        assert whole["message"] == {"role": "assistant", "content": "o", "thinking": "o"}
    else:
        assert (whole["thinking"], whole["response"]) == ("o", "o")
    # after the first block everything is answer, a second closing tag included
    body["options"] = {"num_predict": 22}
    whole = client.post(path, json={**body, "stream": False}).json()
    answer = whole["message"]["content"] if path == "/api/chat" else whole["response"]
    assert answer == "o</think> o"


def test_generate_applies_the_grammar_from_the_first_token(client):
    """/api/generate does not defer `format` (as Ollama): here the grammar writes the tag."""
    body = {"model": "thinker", "prompt": "hi", "format": CLOSES, "options": {"num_predict": 40, **GREEDY},
            "stream": False}
    whole = client.post("/api/generate", json=body).json()
    assert (whole["thinking"], whole["response"]) == ('"a', 'b c"')


def test_format_applies_after_the_thinking(client):
    """As Ollama's /api/chat: a thinking model with `format` thinks unconstrained; when its answer
    begins, generation starts again with the grammar, its reasoning in the chat."""
    body = {"model": "chain", "messages": USER, "format": CLOSES, "options": {"num_predict": 40}}
    chunks = lines(client.post("/api/chat", json=body))
    assert "".join(c["message"].get("thinking", "") for c in chunks) == "o"
    assert "".join(c["message"]["content"] for c in chunks) == '"a</think>  b c"'  # the grammar's, left alone
    whole = client.post("/api/chat", json={**body, "stream": False}).json()
    assert whole["message"] == {"role": "assistant", "content": '"a</think>  b c"', "thinking": "o"}
    # without thinking there is nothing to wait for: the grammar applies at once
    whole = client.post("/api/chat", json={**body, "stream": False, "think": False}).json()
    assert whole["message"] == {"role": "assistant", "content": '"a</think>  b c"'}


def test_think_false_leaves_the_text_alone(client):
    body = {"model": "chain", "messages": USER, "think": False, "stream": False, "options": {"num_predict": 12}}
    assert client.post("/api/chat", json=body).json()["message"] == {"role": "assistant", "content": "o</think> o<"}


def test_raw_generate_on_a_thinking_model_is_parsed_too(client):
    """As Ollama: the parser runs for raw prompts as well; a raw prompt ending in the opening
    tag starts inside the block."""
    resp = client.post("/api/generate", json={"model": "chain", "prompt": "x <think>", "raw": True, "stream": False,
                                              "options": {"num_predict": 12}}).json()
    assert (resp["thinking"], resp["response"]) == ("o", "o")


def check_entries(entries: list[dict], top: int) -> None:
    for e in entries:
        assert math.isfinite(e["logprob"]) and e["logprob"] <= 0
        assert bytes(e.get("bytes", [])).decode("utf-8", "replace") == e["token"]
        alts = e.get("top_logprobs", [])
        assert len(alts) == top
        assert [a["logprob"] for a in alts] == sorted((a["logprob"] for a in alts), reverse=True)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_logprobs_stream_with_their_text_and_aggregate(client, path):
    body = {"model": "tiny", "logprobs": True, "top_logprobs": 3, "options": {"num_predict": 10, **GREEDY}}
    body.update({"messages": USER} if path == "/api/chat" else {"prompt": "hello world", "raw": True})
    chunks = lines(client.post(path, json=body))
    text = "".join(c["message"]["content"] if path == "/api/chat" else c["response"] for c in chunks)
    entries = [e for c in chunks for e in c.get("logprobs", ())]
    final = chunks[-1]
    assert len(entries) == final["eval_count"] == 10
    assert b"".join(bytes(e.get("bytes", [])) for e in entries).decode("utf-8", "replace") == text
    check_entries(entries, 3)
    for e in entries:  # greedy without penalties: the sampled token is the most likely one
        assert (e["token"], e["logprob"]) == (e["top_logprobs"][0]["token"], e["top_logprobs"][0]["logprob"])
    whole = client.post(path, json={**body, "stream": False}).json()  # the entries of all chunks, in one list
    text = whole["message"]["content"] if path == "/api/chat" else whole["response"]
    assert len(whole["logprobs"]) == whole["eval_count"] == 10
    assert b"".join(bytes(e.get("bytes", [])) for e in whole["logprobs"]).decode("utf-8", "replace") == text
    check_entries(whole["logprobs"], 3)
    # top_logprobs 0: the sampled tokens only; no logprobs asked: none sent
    body["top_logprobs"] = 0
    plain = client.post(path, json={**body, "stream": False}).json()["logprobs"]
    assert len(plain) == 10 and all("top_logprobs" not in e for e in plain)
    body.pop("logprobs")
    assert all("logprobs" not in c for c in lines(client.post(path, json=body)))


def test_logprobs_cover_thinking_and_content(client):
    body = {"model": "chain", "messages": USER, "logprobs": True, "stream": False, "options": {"num_predict": 12}}
    whole = client.post("/api/chat", json=body).json()
    assert whole["message"] == {"role": "assistant", "content": "o", "thinking": "o"}
    tokens = "".join(e["token"] for e in whole["logprobs"])
    assert tokens == " o</think> o" and len(whole["logprobs"]) == whole["eval_count"]
    assert all(e["logprob"] > -0.01 for e in whole["logprobs"])  # the chain model is sure of each token


@pytest.mark.parametrize("top", [-1, 21])
def test_top_logprobs_out_of_range_is_400(client, top):
    resp = client.post("/api/chat", json={"model": "tiny", "messages": USER, "logprobs": True, "top_logprobs": top})
    assert (resp.status_code, resp.json()) == (400, {"error": "top_logprobs must be between 0 and 20"})
