"""Logprobs and thinking through the real `openai` SDK and `ollama` client against a real
`stack serve` (tiny GGUF): the shapes the clients parse, streamed and not.

The thinking model's template opens the block (`{{ if .Think }}<think>{{ end }}`) and a "chain"
model (tests/support/tiny_gguf.py) writes " o</think> o</think> o..." after it, so the split is
deterministic.
"""

from __future__ import annotations

import math

import ollama
import openai
import pytest

from tests.support.server import start_server
from tests.support.tiny_gguf import THINKING_CHAIN, write_tiny_llama

PLAIN = "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: "
THINKER = ("{{ range .Messages }}{{ .Role }}: {{ .Content }}"
           "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}\n{{ end }}"
           "assistant: {{ if .Think }}<think>{{ end }}")
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}
CLOSES = {"type": "string", "enum": ["a</think>  b c"]}
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_gguf):
    with start_server(tmp_path_factory.mktemp("models"), env={"OLLAMA_CONTEXT_LENGTH": "512"}) as srv:
        client = ollama.Client(host=srv.url)
        digest = client.create_blob(tiny_gguf)
        chain = client.create_blob(write_tiny_llama(tmp_path_factory.mktemp("gguf") / "chain.gguf",
                                                    chain=THINKING_CHAIN))
        for name, blob, template, extra in (("tiny", digest, PLAIN, {}), ("thinker-8", digest, THINKER, {
                "num_predict": 8, "temperature": 0}), ("chain", chain, THINKER, {"num_predict": 12})):
            # no repetition penalty, so that greedy decoding picks the most likely token
            assert client.create(model=name, files={"tiny.gguf": blob}, template=template,
                                 parameters={"repeat_penalty": 1.0, **extra}).status == "success"
        yield srv


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def native(server):
    return ollama.Client(host=server.url, timeout=120)


def check(entries, top: int, greedy: bool = True) -> None:
    """Finite, ≤ 0, alternatives sorted; greedy without penalties: the sampled token is the top-1."""
    assert entries
    for e in entries:
        assert math.isfinite(e.logprob) and e.logprob <= 0
        alts = e.top_logprobs or []
        assert len(alts) == top
        assert [a.logprob for a in alts] == sorted((a.logprob for a in alts), reverse=True)
        if greedy and top:
            assert (e.token, e.logprob) == (alts[0].token, alts[0].logprob)


# -- logprobs ------------------------------------------------------------------------------------


def test_ollama_client_logprobs(native):
    resp = native.chat(model="tiny", messages=USER, logprobs=True, top_logprobs=4, options={"num_predict": 8, **GREEDY})
    assert len(resp.logprobs) == resp.eval_count == 8
    check(resp.logprobs, 4)  # (the client's Logprob model has no `bytes`; the routes' tests check them)
    parts = list(native.generate(model="tiny", prompt="hello world", raw=True, logprobs=True, top_logprobs=2,
                                 stream=True, options={"num_predict": 8, **GREEDY}))
    entries = [e for p in parts for e in (p.logprobs or [])]
    assert len(entries) == parts[-1].eval_count == 8
    check(entries, 2)


def test_openai_chat_logprobs(oai):
    resp = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=8, logprobs=True, top_logprobs=5,
                                       temperature=0)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens == 8
    check(content, 5)
    text = b"".join(bytes(e.bytes or []) for e in content).decode("utf-8", "replace")
    assert text == resp.choices[0].message.content
    streamed = []
    for chunk in oai.chat.completions.create(model="tiny", messages=USER, max_tokens=8, logprobs=True, temperature=0,
                                             stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed.extend(chunk.choices[0].logprobs.content)
    assert len(streamed) == 8
    check(streamed, 0, greedy=False)
    plain = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=3)
    assert plain.choices[0].logprobs is None


def test_openai_completions_logprobs(oai):
    resp = oai.completions.create(model="tiny", prompt="hello world", max_tokens=6, logprobs=3, temperature=0)
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(math.isfinite(v) and v <= 0 for v in lp.token_logprobs)
    assert all(0 < len(alts) <= 3 for alts in lp.top_logprobs)  # a dict: equal token texts collapse
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    streamed = []
    for chunk in oai.completions.create(model="tiny", prompt="hello world", max_tokens=6, logprobs=0, temperature=0,
                                        stream=True):
        if chunk.choices[0].logprobs:
            streamed.extend(chunk.choices[0].logprobs.token_logprobs)
            assert chunk.choices[0].logprobs.top_logprobs is None
    assert len(streamed) == 6
    with pytest.raises(openai.BadRequestError) as info:
        oai.completions.create(model="tiny", prompt="x", logprobs=1, echo=True)
    assert info.value.body["param"] == "logprobs"


# -- thinking ------------------------------------------------------------------------------------


def test_ollama_client_thinking(native):
    resp = native.chat(model="chain", messages=USER)
    assert (resp.message.thinking, resp.message.content) == ("o", "o")
    parts = list(native.chat(model="chain", messages=USER, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "o"
    assert "".join(p.message.content for p in parts) == "o"
    resp = native.generate(model="chain", prompt="hello", think="high")
    assert (resp.thinking, resp.response) == ("o", "o")
    resp = native.chat(model="chain", messages=USER, think=False)
    assert (resp.message.thinking, resp.message.content) == (None, "o</think> o<")
    resp = native.chat(model="chain", messages=USER, format=CLOSES, options={"num_predict": 40})
    assert (resp.message.thinking, resp.message.content) == ("o", '"a</think>  b c"')  # format after thinking
    with pytest.raises(ollama.ResponseError) as info:
        native.chat(model="tiny", messages=USER, think=True)
    assert info.value.status_code == 400 and info.value.error == '"tiny" does not support thinking'


def test_openai_chat_reasoning(oai):
    kw = {"model": "chain", "messages": USER, "max_tokens": 12}
    message = oai.chat.completions.create(**kw).choices[0].message
    assert (message.reasoning, message.content) == ("o", "o")  # Ollama's field; extra to the SDK's model
    reasoning, content = "", ""
    for chunk in oai.chat.completions.create(**kw, stream=True):
        if chunk.choices:
            reasoning += getattr(chunk.choices[0].delta, "reasoning", None) or ""
            content += chunk.choices[0].delta.content or ""
    assert (reasoning, content) == ("o", "o")
    message = oai.chat.completions.create(**kw, reasoning_effort="none").choices[0].message
    assert (getattr(message, "reasoning", None), message.content) == (None, "o</think> o<")
    resp = oai.chat.completions.create(model="chain", messages=USER, max_tokens=40, logprobs=True, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": CLOSES}})
    assert (resp.choices[0].message.reasoning, resp.choices[0].message.content) == ("o", '"a</think>  b c"')
    assert all(math.isfinite(e.logprob) for e in resp.choices[0].logprobs.content)


# -- stack run -----------------------------------------------------------------------------------


def test_stack_run_shows_the_reasoning_apart(server):
    from tests.support.cli import run_stack

    done = run_stack("run", "thinker-8", "hello", env={"OLLAMA_HOST": server.host_env})
    assert done.returncode == 0, done.stderr
    # the random model never closes the block the template opened: all reasoning, no answer
    assert done.stdout.startswith("Thinking...\n") and done.stdout.endswith("\n")
    reasoning = done.stdout[len("Thinking...\n"):-1]
    assert reasoning.strip() and "<think>" not in reasoning and "done thinking" not in reasoning
    done = run_stack("run", "chain", "hello", env={"OLLAMA_HOST": server.host_env})
    assert done.stdout == "Thinking...\no\n...done thinking.\n\no\n"
