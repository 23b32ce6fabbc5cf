"""End to end: the official `ollama` Python client against a real `stack serve` on Gemma 3 270M."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import ollama
import pytest

from tests.support.server import start_server

pytestmark = pytest.mark.e2e

# Ollama's gemma3 TEMPLATE (what `ollama pull gemma3:270m` brings), written here as a Modelfile would.
GEMMA3_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

OPTIONS = {"temperature": 0, "num_predict": 24, "seed": 7}


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, gemma_gguf):
    with start_server(tmp_path_factory.mktemp("models"), env={"OLLAMA_NUM_PARALLEL": "2"}) as srv:
        client = ollama.Client(host=srv.url)
        digest = client.create_blob(gemma_gguf)
        client.create(model="gemma3:270m", files={"gemma-3-270m.gguf": digest}, template=GEMMA3_TEMPLATE,
                      parameters={"stop": ["<end_of_turn>"], "num_ctx": 2048})
        yield client


def check_metrics(r, *, max_eval: int) -> None:
    assert r.done is True and r.done_reason in ("stop", "length")
    assert 0 < r.eval_count <= max_eval
    if r.done_reason == "length":
        assert r.eval_count == max_eval
    assert r.prompt_eval_count > 0 and r.prompt_eval_duration > 0 and r.eval_duration > 0
    assert r.total_duration >= r.load_duration > 0
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration


def test_generate(gemma):
    r = gemma.generate(model="gemma3:270m", prompt="Why is the sky blue? Answer in one sentence.", options=OPTIONS)
    assert r.model == "gemma3:270m" and r.response.strip()
    assert "<end_of_turn>" not in r.response
    check_metrics(r, max_eval=24)
    assert r.context and len(r.context) >= r.prompt_eval_count


def test_generate_stream_matches_non_stream(gemma):
    whole = gemma.generate(model="gemma3:270m", prompt="Name three colours.", options=OPTIONS).response
    parts = list(gemma.generate(model="gemma3:270m", prompt="Name three colours.", options=OPTIONS, stream=True))
    assert "".join(p.response for p in parts) == whole
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    check_metrics(parts[-1], max_eval=24)


def test_chat_streaming_and_not(gemma):
    messages = [{"role": "user", "content": "Say hello to Ada."}]
    r = gemma.chat(model="gemma3:270m", messages=messages, options=OPTIONS)
    assert r.message.role == "assistant" and r.message.content.strip()
    check_metrics(r, max_eval=24)
    parts = list(gemma.chat(model="gemma3:270m", messages=messages, options=OPTIONS, stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content
    assert all(p.message.role == "assistant" for p in parts)
    check_metrics(parts[-1], max_eval=24)
    # the next turn reuses the cached prefix: fewer prompt tokens evaluated than the prompt holds
    follow = messages + [{"role": "assistant", "content": r.message.content},
                         {"role": "user", "content": "And to Grace?"}]
    again = gemma.chat(model="gemma3:270m", messages=follow, options=OPTIONS)
    check_metrics(again, max_eval=24)


LONG_QUESTION = ("I am planning a walking holiday along a river valley in early autumn. Tell me what the "
                 "weather is usually like, which birds and animals I might see along the banks, what the "
                 "villages in such valleys tend to look like, and what I should pack for ten days of walking.")


@pytest.mark.parametrize("template", ["ollama", "gguf"])
def test_chat_next_turn_evaluates_only_new_tokens(gemma, gemma_gguf, template):
    # The history of a chat (the first question and the model's answer) stays in the slot's KV
    # cache: re-rendered and re-tokenized by the server, it must match what the slot holds, so the
    # next turn evaluates only its own few tokens (issue #8: 10th-turn TTFT). Both template paths:
    # Ollama's gemma3 TEMPLATE (Go) and the GGUF's Jinja chat template (no TEMPLATE layer).
    model = "gemma3:270m"
    if template == "gguf":
        model = "gemma3-jinja:270m"
        gemma.create(model=model, files={"gemma-3-270m.gguf": gemma.create_blob(gemma_gguf)},
                     parameters={"num_ctx": 2048})
    messages = [{"role": "user", "content": LONG_QUESTION}]
    first = gemma.chat(model=model, messages=messages, options=OPTIONS)
    follow = messages + [{"role": "assistant", "content": first.message.content},
                         {"role": "user", "content": "And in winter?"}]
    second = gemma.chat(model=model, messages=follow, options=OPTIONS)
    # the new turn is ~15 tokens (end of the answer, turn markers, "And in winter?"); the history
    # before it (~60 tokens of question, 24 of answer) must not be evaluated again
    assert first.eval_count == 24
    assert 0 < second.prompt_eval_count <= 24


def test_embed_and_embeddings(gemma):
    r = gemma.embed(model="gemma3:270m", input=["The sky is blue.", "Grass is green."])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 640
    for vector in r.embeddings:
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-4)
    assert r.prompt_eval_count > 0 and r.total_duration > 0
    legacy = gemma.embeddings(model="gemma3:270m", prompt="The sky is blue.")
    assert len(legacy.embedding) == 640


def test_ps_and_errors(gemma):
    gemma.generate(model="gemma3:270m", prompt="", keep_alive="10m")
    (m,) = [m for m in gemma.ps().models if m.model == "gemma3:270m"]
    assert m.name == "gemma3:270m" and m.size > 200_000_000 and m.size_vram == 0 and len(m.digest) == 64
    assert m.details.family == "gemma3" and m.context_length == 2048
    remaining = (m.expires_at - datetime.now(timezone.utc)).total_seconds()
    assert 500 < remaining <= 600
    with pytest.raises(ollama.ResponseError) as info:
        gemma.generate(model="missing", prompt="hi")
    assert info.value.status_code == 404 and info.value.error == "model 'missing' not found"
    with pytest.raises(ollama.ResponseError) as info:
        gemma.generate(model="gemma3:270m", prompt="hi", options={"num_ctx": "lots"})
    assert info.value.status_code == 400 and info.value.error == 'option "num_ctx" must be of type integer'
    r = gemma.generate(model="gemma3:270m", prompt="", keep_alive=0)
    assert r.done_reason == "unload"
