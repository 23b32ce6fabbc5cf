"""End to end: the real `openai` SDK against a real `stack serve` running Gemma 3 270M.

The model is Ollama's gemma3 template plus a tools section (Ollama's gemma3 template has none),
as a team would write it in a Modelfile. The 270M model is small: the assertions are about the
API (shapes, usage, streaming equal to non-streaming, the native API giving the same answer) and
about what the server guarantees (JSON mode and forced tool calls are grammar-constrained), not
about the quality of the answers.
"""

from __future__ import annotations

import base64
import json
import math
import struct

import ollama
import openai
import pytest

from tests.support.server import start_server

pytestmark = pytest.mark.e2e

MODEL = "gemma3:270m"

GEMMA3_TOOLS_TEMPLATE = """{{- if .Tools }}<start_of_turn>user
You can call these functions:
{{ range .Tools }}{{ . }}
{{ end }}
To call a function, reply with only a JSON object: {"name": "<function name>", "arguments": {<arguments>}}.<end_of_turn>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}\
{{ end }}{{ else }}{{ .Content }}{{ end }}<end_of_turn>
{{ else if eq .Role "tool" }}<start_of_turn>user
The function returned: {{ .Content }}<end_of_turn>
{{ end }}
{{- if $last }}<start_of_turn>model
{{ end }}
{{- end }}""".replace("\\\n", "")

GREEDY = {"temperature": 0, "seed": 7}
QUESTION = [{"role": "user", "content": "Why is the sky blue? Answer in one sentence."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]}},
                   "required": ["city"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, gemma_gguf):
    with start_server(tmp_path_factory.mktemp("models"), env={"OLLAMA_NUM_PARALLEL": "1"}) as srv:
        client = ollama.Client(host=srv.url)
        digest = client.create_blob(gemma_gguf)
        client.create(model=MODEL, files={"gemma-3-270m.gguf": digest}, template=GEMMA3_TOOLS_TEMPLATE,
                      parameters={"stop": ["<end_of_turn>"], "num_ctx": 2048})
        yield srv


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def native(server):
    return ollama.Client(host=server.url, timeout=300)


def test_models(oai):
    assert [m.id for m in oai.models.list()] == [MODEL]
    model = oai.models.retrieve(MODEL)
    assert (model.id, model.owned_by, model.object) == (MODEL, "library", "model")


def test_chat_plain_and_the_native_api_agree(oai, native):
    resp = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, **GREEDY)
    message = resp.choices[0].message
    assert message.role == "assistant" and message.content.strip() and message.tool_calls is None
    assert "<end_of_turn>" not in message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert 0 < resp.usage.completion_tokens <= 8 and resp.usage.prompt_tokens > 10
    same = native.chat(model=MODEL, messages=QUESTION, options={"num_predict": 8, "top_p": 1.0, **GREEDY})
    assert same.message.content == message.content


def test_chat_streamed_with_include_usage(oai):
    whole = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, **GREEDY)
    chunks = list(oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True}, **GREEDY))
    *pieces, finish, usage = chunks
    assert pieces[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in pieces) == whole.choices[0].message.content
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert usage.choices == []
    assert usage.usage.completion_tokens == whole.usage.completion_tokens
    assert usage.usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions(oai, native):
    resp = oai.completions.create(model=MODEL, prompt="Name three colours.", max_tokens=8, **GREEDY)
    assert resp.choices[0].text.strip() and resp.usage.completion_tokens <= 8
    same = native.generate(model=MODEL, prompt="Name three colours.", options={"num_predict": 8, "top_p": 1.0,
                                                                               **GREEDY})
    assert resp.choices[0].text == same.response
    streamed = oai.completions.create(model=MODEL, prompt="Name three colours.", max_tokens=8, stream=True,
                                      **GREEDY)
    assert "".join(c.choices[0].text for c in streamed) == resp.choices[0].text


def test_embeddings(oai, native):
    resp = oai.embeddings.create(model=MODEL, input=["The cat sat on the mat.", "A dog ran in the park."],
                                 encoding_format="float")
    a, b = (d.embedding for d in resp.data)
    assert len(a) == len(b) == 640  # Gemma 3 270M's embedding length
    assert math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-4)
    assert a == pytest.approx(native.embed(model=MODEL, input="The cat sat on the mat.").embeddings[0], abs=1e-5)
    raw = oai.embeddings.create(model=MODEL, input="The cat sat on the mat.", encoding_format="base64")
    assert list(struct.unpack("<640f", base64.b64decode(raw.data[0].embedding))) == pytest.approx(a, abs=1e-5)
    short = oai.embeddings.create(model=MODEL, input="The cat sat on the mat.", dimensions=64,
                                  encoding_format="float").data[0].embedding
    assert len(short) == 64 and math.isclose(math.fsum(x * x for x in short), 1.0, rel_tol=1e-4)


def test_json_mode(oai):
    resp = oai.chat.completions.create(
        model=MODEL, max_tokens=12, response_format={"type": "json_object"}, **GREEDY,
        messages=[{"role": "user", "content": 'Is Paris in France? Reply with JSON like {"answer": "yes"}.'}])
    content = resp.choices[0].message.content
    if resp.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # the grammar holds while the model runs; a small model may not close the object in time
        assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 12
        assert content.lstrip().startswith("{")
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    resp = oai.chat.completions.create(
        model=MODEL, max_tokens=30, **GREEDY, messages=[{"role": "user", "content": "Is Paris in France?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
    assert resp.choices[0].finish_reason == "stop"
    assert json.loads(resp.choices[0].message.content) in ({"answer": "yes"}, {"answer": "no"})


def test_tool_call_round_trip(oai):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required",
                                        max_tokens=30, **GREEDY)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert arguments in ({"city": "Paris"}, {"city": "London"}, {"city": "Tokyo"})

    # the same call, streamed: one tool_calls delta, then the finish chunk
    chunks = list(oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], stream=True,
                                              tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                              max_tokens=30, **GREEDY))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert [[(d.index, d.function.name, d.function.arguments) for d in ds] for ds in deltas] == [
        [(0, "get_weather", call.function.arguments)]]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # the client runs the tool and sends the result back; the model answers in text
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})}]
    rendered = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                           extra_body={"_debug_render_only": True})
    prompt = rendered.model_extra["_debug_info"]["rendered_template"]
    assert '<start_of_turn>model\n{"name": "get_weather", "arguments": {' in prompt
    assert json.dumps(arguments["city"]) in prompt
    assert '<start_of_turn>user\nThe function returned: {"temperature_c": 18, "sky": "sunny"}<end_of_turn>' in prompt
    final = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], max_tokens=8, **GREEDY)
    answer = final.choices[0]
    assert answer.finish_reason in ("stop", "length", "tool_calls")
    assert answer.message.content or answer.message.tool_calls


@pytest.mark.parametrize("call,error", [
    (lambda c: c.chat.completions.create(model="gemma3:nope", messages=QUESTION), openai.NotFoundError),
    (lambda c: c.embeddings.create(model="nope", input="x"), openai.NotFoundError),
    (lambda c: c.chat.completions.create(model=MODEL, messages=QUESTION, n=3), openai.BadRequestError),
    (lambda c: c.completions.create(model=MODEL, prompt=["a", "b"]), openai.BadRequestError),
    (lambda c: c.embeddings.create(model=MODEL, input="x", encoding_format="int8"),  # type: ignore[arg-type]
     openai.BadRequestError),
])
def test_error_classes(oai, call, error):
    with pytest.raises(error) as info:
        call(oai)
    assert set(info.value.body) == {"message", "type", "param", "code"}
