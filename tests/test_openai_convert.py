"""OpenAI request -> internal request, and engine events -> OpenAI objects: tables of cases."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Optional

import pytest
from pydantic import ValidationError

from server.inference import Final as EngineFinal
from server.openai import convert
from server.openai.errors import OpenAIError, error_body, from_exception
from server.openai.types import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, validation_error

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def chat(**kw: Any) -> convert.ChatPlan:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    return convert.chat_request(ChatCompletionRequest.model_validate(body))


def refused(fn, *args, **kw) -> OpenAIError:
    with pytest.raises(OpenAIError) as info:
        fn(*args, **kw)
    assert info.value.status == 400
    return info.value


# -- sampling parameters -----------------------------------------------------------------------

OPTION_CASES = [
    ({}, {"temperature": 1.0, "top_p": 1.0}),
    ({"temperature": 0, "top_p": 0.5}, {"temperature": 0, "top_p": 0.5}),
    ({"max_tokens": 7}, {"num_predict": 7}),
    ({"max_completion_tokens": 9}, {"num_predict": 9}),
    ({"max_tokens": 9, "max_completion_tokens": 9}, {"num_predict": 9}),
    ({"seed": 42}, {"seed": 42}),
    ({"stop": "\n"}, {"stop": ["\n"]}),
    ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
    ({"stop": []}, {}),
    ({"stop": ""}, {}),
    ({"stop": ["", "x"]}, {"stop": ["x"]}),
    ({"presence_penalty": 0.5, "frequency_penalty": -1}, {"presence_penalty": 0.5, "frequency_penalty": -1}),
    ({"n": 1}, {}),
]


@pytest.mark.parametrize("params,expected", OPTION_CASES)
def test_sampling_parameters_become_native_options(params, expected):
    options = chat(**params).job.options
    for key, value in expected.items():
        assert options[key] == value
    assert "stop" not in options or "stop" in expected


REFUSED_CHAT = [
    ({"n": 2}, "n", "one choice"),
    ({"n": 0}, "n", "minimum"),
    ({"max_tokens": 0}, "max_tokens", "minimum of 1"),
    ({"max_completion_tokens": -1}, "max_completion_tokens", "minimum of 1"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens", "disagree"),
    ({"temperature": 2.5}, "temperature", "between 0 and 2"),
    ({"top_p": 1.5}, "top_p", "between 0 and 1"),
    ({"presence_penalty": 3}, "presence_penalty", "between -2 and 2"),
    ({"stop": ["a", 1]}, "stop", "invalid type for 'stop' field: int"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "not supported"),
    ({"top_logprobs": 3}, "top_logprobs", "'logprobs' must be set to true"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "not between 0 and 20"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "not between 0 and 20"),
    ({"modalities": ["text", "audio"]}, "modalities", "text"),
    ({"audio": {"voice": "alloy"}}, "audio", "not supported"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction", "not supported"),
    ({"functions": [{"name": "f"}]}, "functions", "use 'tools'"),
    ({"function_call": "auto"}, "function_call", "use 'tools'"),
    ({"model": ""}, "model", "provide a model"),
    ({"messages": []}, "messages", "[] is too short - 'messages'"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "Supported values"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "schema"),
    ({"reasoning_effort": "huge"}, "reasoning_effort", "invalid reasoning value"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}],
      "response_format": {"type": "json_object"}}, "response_format", "cannot be combined"),
    ({"tool_choice": {"type": "function", "function": {"name": "g"}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice.function.name", "not among the tools"),
    ({"tool_choice": {"type": "custom", "function": {"name": "f"}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice.type", "not supported"),
    ({"tool_choice": "sometimes"}, "tool_choice", "Supported values"),
    ({"tools": [{"type": "code_interpreter", "function": {"name": "f"}}]}, "tools[0].type", "not supported"),
]


@pytest.mark.parametrize("params,param,text", REFUSED_CHAT)
def test_unsupported_or_bad_chat_parameters_are_400_naming_the_parameter(params, param, text):
    err = refused(chat, **params)
    assert err.param == param
    assert text in err.message


@pytest.mark.parametrize("params", [{"logprobs": False}, {"top_logprobs": 0}, {"modalities": ["text"]},
                                    {"tool_choice": "auto"}, {"user": "u1", "metadata": {"a": "b"}, "store": False},
                                    {"stream_options": {"include_usage": True}}, {"parallel_tool_calls": True}])
def test_parameters_that_do_not_change_the_answer_are_accepted(params):
    chat(**params)


# -- messages ----------------------------------------------------------------------------------


def native(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m.to_json() for m in chat(messages=messages).job.messages]


MESSAGE_CASES = [
    ([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
     [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]),
    ([{"role": "developer", "content": "be brief"}], [{"role": "system", "content": "be brief"}]),
    ([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
     [{"role": "user", "content": "a\nb"}]),
    ([{"role": "user", "content": [{"type": "text", "text": "what?"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}],
     [{"role": "user", "content": "what?", "images": [PNG]}]),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "data:;base64," + PNG}]}],
     [{"role": "user", "content": "", "images": [PNG]}]),
    ([{"role": "assistant", "content": None, "reasoning": "hmm",
       "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
     [{"role": "assistant", "content": "", "thinking": "hmm",
       "tool_calls": [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_1"}]),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "now", "arguments": ""}}]},
      {"role": "tool", "name": "clock", "tool_call_id": "c", "content": "noon"}],
     [{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {"name": "now", "arguments": {}}}]},
      {"role": "tool", "content": "noon", "tool_name": "clock", "tool_call_id": "c"}]),
    ([{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
     [{"role": "assistant", "content": "no"}]),
]


@pytest.mark.parametrize("messages,expected", MESSAGE_CASES)
def test_messages_become_native_messages(messages, expected):
    got = native(messages)
    for m in got:
        for call in m.get("tool_calls", ()):
            call["function"].pop("index", None)
    assert got == expected


def test_images_are_collected_on_the_job_for_the_vision_check():
    plan = chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + PNG}}]}])
    assert plan.job.images == [PNG]


REFUSED_MESSAGES = [
    ([{"role": "user", "content": None}], "messages[0].content", "required"),
    ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role", "deprecated"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
     "messages[0].content[0]", "image URLs are not currently supported"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/gif;base64,AAAA"}}]}],
     "messages[0].content[0]", "invalid image input"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
     "messages[0].content[0]", "invalid image input"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}],
     "messages[0].content[0].type", "not supported"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0]", "needs 'text'"),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}],
     "messages[0].tool_calls[0].function.arguments", "invalid tool call arguments"),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}],
     "messages[0].tool_calls[0].function.arguments", "JSON object"),
    ([{"role": "user", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}],
     "messages[0].tool_calls", "only assistant"),
]


@pytest.mark.parametrize("messages,param,text", REFUSED_MESSAGES)
def test_bad_messages_are_400(messages, param, text):
    err = refused(chat, messages=messages)
    assert err.param == param
    assert text in err.message


# -- tools, formats, reasoning ------------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def test_tools_pass_through_in_the_native_shape_and_tool_choice_none_offers_none():
    assert chat(tools=[WEATHER]).job.tools == [WEATHER]
    assert chat(tools=[WEATHER], tool_choice="auto").job.tools == [WEATHER]
    assert chat(tools=[WEATHER], tool_choice="none").job.tools == []
    bare = chat(tools=[{"type": "function", "function": {"name": "now"}}]).job.tools
    assert bare == [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]


NOW = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
WEATHER_CALL = {"type": "object", "properties": {"name": {"type": "string", "enum": ["get_weather"]},
                                                 "arguments": WEATHER["function"]["parameters"]},
                "required": ["name", "arguments"]}
NOW_CALL = {"type": "object", "properties": {"name": {"type": "string", "enum": ["now"]},
                                             "arguments": {"type": "object", "properties": {}}},
            "required": ["name", "arguments"]}


@pytest.mark.parametrize("tools,choice,fmt", [
    ([WEATHER], "required", WEATHER_CALL),
    ([WEATHER, NOW], "required", {"anyOf": [WEATHER_CALL, NOW_CALL]}),
    ([WEATHER, NOW], {"type": "function", "function": {"name": "now"}}, NOW_CALL),
    ([WEATHER, NOW], "auto", None),
])
def test_a_forced_tool_choice_constrains_the_answer_to_one_call(tools, choice, fmt):
    plan = chat(tools=tools, tool_choice=choice)
    assert plan.job.format == fmt
    assert plan.forced_call is (fmt is not None)
    assert plan.job.tools == tools  # the model still sees every tool


@pytest.mark.parametrize("text,call", [
    ('{"name": "now", "arguments": {}}', {"function": {"name": "now", "arguments": {}}}),
    ('{"name": "get_weather", "arguments": {"city": "Paris"}} ',
     {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}),
    ('{"name": "get_weather", "arguments": {"city": "Par', None),  # cut short by max_tokens
    ('{"name": "now"}', None),
    ("[]", None),
])
def test_forced_call_reads_the_constrained_answer(text, call):
    assert convert.forced_call(text) == call


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.mark.parametrize("fmt,expected", [
    (None, None),
    ({"type": "text"}, None),
    ({"type": "json_object"}, "json"),
    ({"type": " JSON_OBJECT "}, "json"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}, SCHEMA),
])
def test_response_format_becomes_the_native_format(fmt, expected):
    assert chat(response_format=fmt).job.format == expected


@pytest.mark.parametrize("effort,think", [(None, None), ("none", False), ("minimal", "low"), ("low", "low"),
                                          ("medium", "medium"), ("high", "high"), ("xhigh", "max"), ("ultra", "max")])
def test_reasoning_effort_maps_to_think(effort, think):
    assert chat(reasoning_effort=effort).job.think == think
    assert chat(reasoning={"effort": effort}).job.think == think


def test_the_plan_carries_stream_and_usage_flags():
    plan = chat()
    assert (plan.stream, plan.include_usage, plan.parallel_tool_calls) == (False, False, True)
    plan = chat(stream=True, stream_options={"include_usage": True}, parallel_tool_calls=False)
    assert (plan.stream, plan.include_usage, plan.parallel_tool_calls) == (True, True, False)
    # include_usage only means something for a stream
    assert chat(stream=False, stream_options={"include_usage": True}).include_usage is False
    job = chat().job
    assert (job.kind, job.model, job.keep_alive, job.truncate) == ("chat", "m", None, True)


# -- completions and embeddings requests --------------------------------------------------------


def completion(**kw: Any) -> convert.CompletionPlan:
    return convert.completion_request(CompletionRequest.model_validate({"model": "m", "prompt": "Once", **kw}))


def test_completion_requests():
    plan = completion(max_tokens=5, stop=["."], suffix="end", echo=True, stream=True,
                      stream_options={"include_usage": True})
    job = plan.job
    assert (job.kind, job.prompt, job.suffix, job.raw) == ("generate", "Once", "end", False)
    assert job.options["num_predict"] == 5 and job.options["stop"] == ["."]
    assert (plan.echo, plan.stream, plan.include_usage) == ("Once", True, True)
    assert completion(prompt=["only one"]).job.prompt == "only one"
    assert completion().echo == ""


@pytest.mark.parametrize("params,param,text", [
    ({"prompt": ["a", "b"]}, "prompt", "several prompts"),
    ({"prompt": [1, 2, 3]}, "prompt", "token arrays"),
    ({"prompt": [[1, 2]]}, "prompt", "token arrays"),
    ({"prompt": None}, "prompt", "provide a prompt"),
    ({"prompt": 5}, "prompt", "expected a string"),
    ({"prompt": ""}, "prompt", "must not be empty"),
    ({"best_of": 3}, "best_of", "one choice"),
    ({"n": 2}, "n", "one choice"),
    ({"logprobs": 21}, "logprobs", "not between 0 and 20"),
    ({"logprobs": -1}, "logprobs", "not between 0 and 20"),
    ({"logprobs": 2, "echo": True}, "logprobs", "echoed prompt"),
    ({"stop": [1]}, "stop", "invalid type for 'stop' field"),
    ({"max_tokens": 0}, "max_tokens", "minimum of 1"),
])
def test_bad_completion_requests_are_400(params, param, text):
    err = refused(completion, **params)
    assert (err.param, text in err.message) == (param, True)


def embed(**kw: Any) -> convert.EmbedPlan:
    return convert.embedding_request(EmbeddingRequest.model_validate({"model": "m", **kw}))


@pytest.mark.parametrize("params,inputs,dims,b64", [
    ({"input": "hello"}, ["hello"], None, False),
    ({"input": ""}, [""], None, False),
    ({"input": ["a", "b"], "dimensions": 8}, ["a", "b"], 8, False),
    ({"input": "a", "encoding_format": "BASE64"}, ["a"], None, True),
    ({"input": "a", "encoding_format": "float"}, ["a"], None, False),
])
def test_embedding_requests(params, inputs, dims, b64):
    plan = embed(**params)
    assert (plan.inputs, plan.dimensions, plan.base64) == (inputs, dims, b64)


@pytest.mark.parametrize("params,param,text", [
    ({}, "input", "invalid input"),
    ({"input": []}, "input", "invalid input"),
    ({"input": [1, 2]}, "input", "token arrays"),
    ({"input": ["a", 1]}, "input", "invalid input"),
    ({"input": "a", "encoding_format": "int8"},
     "encoding_format", "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."),
    ({"input": "a", "dimensions": 0}, "dimensions", "minimum of 1"),
    ({"input": "a", "model": ""}, "model", "provide a model"),
])
def test_bad_embedding_requests_are_400(params, param, text):
    err = refused(embed, **params)
    assert (err.param, text in err.message) == (param, True)


# -- shape errors from pydantic ----------------------------------------------------------------


@pytest.mark.parametrize("body,message,param", [
    ({"messages": [{"content": "x"}]}, "Missing required parameter: 'messages[0].role'.", "messages[0].role"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "Invalid value for 'messages[0].role'", "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "Invalid type for 'messages[0].content'", "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
     "Invalid type for 'messages[0].content[0].text'", "messages[0].content[0].text"),
    ({"temperature": "hot"}, "Invalid type for 'temperature'", "temperature"),
    ({"stream": "yes"}, "Invalid type for 'stream'", "stream"),
    ({"max_tokens": 1.5}, "Invalid type for 'max_tokens'", "max_tokens"),
    ({"tools": [{"type": "function"}]}, "Missing required parameter: 'tools[0].function'.", "tools[0].function"),
])
def test_shape_errors_name_the_parameter(body, message, param):
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"model": "m", **body})
    got_message, got_param = validation_error(info.value)
    assert got_message.startswith(message)
    assert got_param == param


# -- results -----------------------------------------------------------------------------------


def Final(done_reason: str = "stop") -> EngineFinal:
    return EngineFinal(done_reason=done_reason, prompt_eval_count=10, eval_count=3)


@pytest.mark.parametrize("final,expected", [
    (EngineFinal("stop", prompt_eval_count=4, eval_count=2),
     {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}),
    (EngineFinal("stop", prompt_eval_count=4, eval_count=2, prompt_tokens=30, cached_tokens=26),
     {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32, "prompt_tokens_details": {"cached_tokens": 26}}),
])
def test_usage_counts_every_prompt_token_and_reports_the_cached_ones(final, expected):
    assert convert.usage(final) == expected


def ids():
    n = iter(range(100))
    return lambda: f"call_{next(n)}"


CALL = {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}


def test_chat_completion_object():
    body = convert.chat_completion("chatcmpl-1", 1700000000, "m", [("text", "Hel"), ("text", "lo"), ("done", Final())])
    assert body == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }


@pytest.mark.parametrize("events,message,reason", [
    ([("tool_calls", [CALL]), ("done", Final())],
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_0", "index": 0, "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, "tool_calls"),
    ([("tool_calls", [{**CALL, "id": "call_x"}, CALL]), ("done", Final())],
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_x", "index": 0, "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
         {"id": "call_0", "index": 1, "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, "tool_calls"),
    ([("text", "Let me check."), ("tool_calls", [CALL]), ("done", Final(done_reason="length"))],
     {"role": "assistant", "content": "Let me check.", "tool_calls": [
         {"id": "call_0", "index": 0, "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, "length"),
    ([("thinking", "hmm"), ("text", "4"), ("done", Final())],
     {"role": "assistant", "content": "4", "reasoning": "hmm"}, "stop"),
    ([("done", Final(done_reason="length"))], {"role": "assistant", "content": ""}, "length"),
])
def test_chat_completion_messages_and_finish_reasons(events, message, reason):
    body = convert.chat_completion("c", 0, "m", events, call_id=ids())
    assert body["choices"][0]["message"] == message
    assert body["choices"][0]["finish_reason"] == reason


def test_a_forced_call_answer_becomes_a_tool_call():
    events = [("text", '{"name": "now", '), ("text", '"arguments": {}}'), ("done", Final())]
    body = convert.chat_completion("c", 0, "m", events, forced_call=True, call_id=ids())
    assert body["choices"][0]["message"] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "index": 0, "type": "function", "function": {"name": "now", "arguments": "{}"}}]}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    cut = convert.chat_completion("c", 0, "m", [("text", '{"name": "no'), ("done", Final("length"))],
                                  forced_call=True, call_id=ids())
    assert cut["choices"][0]["message"] == {"role": "assistant", "content": '{"name": "no'}
    assert cut["choices"][0]["finish_reason"] == "length"
    parsed = convert.chat_completion("c", 0, "m", [("text", " "), ("tool_calls", [CALL]), ("done", Final())],
                                     forced_call=True, call_id=ids())
    assert parsed["choices"][0]["message"]["content"] is None


def test_parallel_tool_calls_false_keeps_the_first_call():
    body = convert.chat_completion("c", 0, "m", [("tool_calls", [CALL, CALL]), ("done", Final())],
                                   parallel_tool_calls=False, call_id=ids())
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1


def stream(events, **kw):
    s = convert.ChatStream("c", 7, "m", call_id=ids(), **kw)
    return [chunk for kind, value in events for chunk in s.feed(kind, value)]


def deltas(chunks):
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) if c["choices"] else ("usage", c["usage"])
            for c in chunks]


STREAM_CASES = [
    ([("text", "Hel"), ("text", "lo"), ("done", Final())], {},
     [({"role": "assistant", "content": "Hel"}, None), ({"content": "lo"}, None), ({}, "stop")]),
    ([("text", "Hi"), ("done", Final())], {"include_usage": True},
     [({"role": "assistant", "content": "Hi"}, None), ({}, "stop"),
      ("usage", {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})]),
    ([("done", Final(done_reason="length"))], {},
     [({"role": "assistant", "content": ""}, None), ({}, "length")]),
    ([("text", ""), ("text", ""), ("text", "x"), ("done", Final())], {},
     [({"role": "assistant", "content": ""}, None), ({"content": "x"}, None), ({}, "stop")]),
    ([("tool_calls", [CALL]), ("tool_calls", [CALL]), ("done", Final())], {},
     [({"role": "assistant", "tool_calls": [{"id": "call_0", "index": 0, "type": "function", "function": {
         "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, None),
      ({"tool_calls": [{"id": "call_1", "index": 1, "type": "function", "function": {
          "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, None),
      ({}, "tool_calls")]),
    ([("tool_calls", [CALL]), ("tool_calls", [CALL]), ("done", Final())], {"parallel_tool_calls": False},
     [({"role": "assistant", "tool_calls": [{"id": "call_0", "index": 0, "type": "function", "function": {
         "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, None),
      ({}, "tool_calls")]),
    ([("thinking", "hmm"), ("text", "4"), ("done", Final())], {},
     [({"role": "assistant", "reasoning": "hmm"}, None), ({"content": "4"}, None), ({}, "stop")]),
    ([("text", '{"name": "now", '), ("text", '"arguments": {}}'), ("done", Final())], {"forced_call": True},
     [({"role": "assistant", "tool_calls": [{"id": "call_0", "index": 0, "type": "function", "function": {
         "name": "now", "arguments": "{}"}}]}, None), ({}, "tool_calls")]),
    ([("text", '{"name": "no'), ("done", Final("length"))], {"forced_call": True},
     [({"role": "assistant", "content": '{"name": "no'}, None), ({}, "length")]),
    # the engine's parser found the call itself; the grammar's whitespace around it is dropped
    ([("text", " "), ("tool_calls", [CALL]), ("text", "\n"), ("done", Final())], {"forced_call": True},
     [({"role": "assistant", "tool_calls": [{"id": "call_0", "index": 0, "type": "function", "function": {
         "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, None), ({}, "tool_calls")]),
]


@pytest.mark.parametrize("events,kw,expected", STREAM_CASES)
def test_chat_stream_chunks(events, kw, expected):
    chunks = stream(events, **kw)
    assert deltas(chunks) == expected
    for c in chunks:
        assert (c["id"], c["object"], c["created"], c["model"]) == ("c", "chat.completion.chunk", 7, "m")


def test_text_completion_object_and_echo():
    body = convert.text_completion("cmpl-1", 5, "m", [("text", " upon"), ("done", Final(done_reason="length"))],
                                   echo="Once")
    assert body == {"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "m",
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"text": "Once upon", "index": 0, "logprobs": None, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


@pytest.mark.parametrize("kw,expected", [
    ({}, [(" a", None), (" b", None), ("", "stop")]),
    ({"echo": "P"}, [("P", None), (" a", None), (" b", None), ("", "stop")]),
    ({"include_usage": True}, [(" a", None), (" b", None), ("", "stop"), "usage"]),
])
def test_completion_stream_chunks(kw, expected):
    s = convert.CompletionStream("cmpl-1", 5, "m", **kw)
    chunks = [c for kind, v in [("text", " a"), ("text", " b"), ("done", Final())] for c in s.feed(kind, v)]
    got = [(c["choices"][0]["text"], c["choices"][0]["finish_reason"]) if c["choices"] else "usage" for c in chunks]
    assert got == expected
    if kw.get("include_usage"):
        assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
        assert all(c["usage"] is None for c in chunks[:-1])


def test_embedding_list_float_and_base64():
    vectors = [[0.6, 0.8], [1.0, 0.0]]
    body = convert.embedding_list("m", vectors, 4, False)
    assert body == {"object": "list", "model": "m", "usage": {"prompt_tokens": 4, "total_tokens": 4},
                    "data": [{"object": "embedding", "embedding": [0.6, 0.8], "index": 0},
                             {"object": "embedding", "embedding": [1.0, 0.0], "index": 1}]}
    encoded = convert.embedding_list("m", vectors, 4, True)["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == pytest.approx((0.6, 0.8))


def test_model_objects():
    assert convert.model_object("gemma3:270m", 1700000000.7, "library") == {
        "id": "gemma3:270m", "object": "model", "created": 1700000000, "owned_by": "library"}
    assert convert.model_list([]) == {"object": "list", "data": []}


def test_ids_look_like_openai_ids():
    assert convert.new_id("chatcmpl-").startswith("chatcmpl-") and len(convert.new_id("x")) == 25
    assert convert.new_id("x") != convert.new_id("x")


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"), (401, "invalid_request_error"),
                                         (403, "permission_error"), (404, "not_found_error"),
                                         (409, "conflict_error"), (413, "invalid_request_error"),
                                         (422, "invalid_request_error"),
                                         (429, "rate_limit_error"), (500, "api_error"), (503, "api_error")])
def test_error_body_shape(status, kind):
    assert error_body("boom", status, param="p") == {"error": {"message": "boom", "type": kind, "param": "p",
                                                               "code": None}}


class Native(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@pytest.mark.parametrize("exc,status,message,code", [
    (Native("model 'x' not found", 404), 404, "model 'x' not found", "model_not_found"),
    (Native("server busy, please try again.  maximum pending requests exceeded", 503), 503,
     "server busy, please try again.  maximum pending requests exceeded", None),
    (Native("raw mode does not support template, system, or context", 400), 400,
     "raw mode does not support template, system, or context", None),
    (RuntimeError("kaput"), 500, "kaput", None),
])
def test_native_errors_keep_status_and_message(exc, status, message, code):
    err = from_exception(exc)
    assert (err.status, err.message, err.code) == (status, message, code)


def test_tool_call_arguments_are_json_strings_the_sdk_can_parse():
    calls = convert.tool_calls([{"function": {"name": "f", "arguments": {"q": "café", "n": [1, 2]}}}],
                               call_id=lambda: "call_a")
    assert json.loads(calls[0]["function"]["arguments"]) == {"q": "café", "n": [1, 2]}
    assert calls[0]["id"] == "call_a"


# -- logprobs ----------------------------------------------------------------------------------

LP_A = {"token": "He", "logprob": -0.5, "bytes": [72, 101],
        "top_logprobs": [{"token": "He", "logprob": -0.5, "bytes": [72, 101]}, {"token": "", "logprob": -2.0}]}
LP_B = {"token": "llo", "logprob": -1.25, "bytes": [108, 108, 111],
        "top_logprobs": [{"token": "y", "logprob": -1.0, "bytes": [121]}, {"token": "llo", "logprob": -1.25,
                                                                          "bytes": [108, 108, 111]}]}
OAI_A = {"token": "He", "logprob": -0.5, "bytes": [72, 101],
         "top_logprobs": [{"token": "He", "logprob": -0.5, "bytes": [72, 101]}, {"token": "", "logprob": -2.0,
                                                                                 "bytes": None}]}
OAI_B = {"token": "llo", "logprob": -1.25, "bytes": [108, 108, 111],
         "top_logprobs": [{"token": "y", "logprob": -1.0, "bytes": [121]},
                          {"token": "llo", "logprob": -1.25, "bytes": [108, 108, 111]}]}


def test_logprobs_requests():
    assert (chat().job.logprobs, chat().job.top_logprobs) == (False, 0)
    assert (chat(logprobs=True).job.logprobs, chat(logprobs=True).job.top_logprobs) == (True, 0)
    assert chat(logprobs=True, top_logprobs=20).job.top_logprobs == 20
    assert chat(logprobs=True).logprobs and not chat(logprobs=False).logprobs
    assert (completion().job.logprobs, completion(logprobs=0).job.logprobs) == (False, True)
    assert completion(logprobs=3).job.top_logprobs == 3


def test_chat_completion_logprobs_are_openais_token_logprobs():
    events = [("logprobs", [LP_A]), ("text", "He"), ("logprobs", [LP_B]), ("text", "llo"), ("done", Final())]
    body = convert.chat_completion("c", 0, "m", events, logprobs=True)
    assert body["choices"][0]["logprobs"] == {"content": [OAI_A, OAI_B], "refusal": None}
    assert body["choices"][0]["message"]["content"] == "Hello"
    assert convert.chat_completion("c", 0, "m", events)["choices"][0]["logprobs"] is None  # not asked
    assert convert.chat_completion("c", 0, "m", [("done", Final())], logprobs=True)["choices"][0]["logprobs"] == \
        {"content": [], "refusal": None}


def test_chat_stream_logprobs_ride_on_the_next_chunk():
    events = [("logprobs", [LP_A]), ("thinking", "He"), ("logprobs", [LP_B]), ("text", "llo"),
              ("logprobs", [LP_A]), ("done", Final())]
    chunks = stream(events, logprobs=True)
    got = [c["choices"][0]["logprobs"] for c in chunks]
    assert got == [{"content": [OAI_A], "refusal": None}, {"content": [OAI_B], "refusal": None},
                   {"content": [OAI_A], "refusal": None}]  # the last entry on the finish chunk
    assert deltas(chunks) == [({"role": "assistant", "reasoning": "He"}, None), ({"content": "llo"}, None),
                              ({}, "stop")]
    assert all(c["choices"][0]["logprobs"] is None for c in stream(events))  # not asked: never sent


def test_completion_logprobs_are_the_legacy_parallel_lists():
    events = [("logprobs", [LP_A]), ("text", "He"), ("logprobs", [LP_B]), ("text", "llo"), ("done", Final())]
    body = convert.text_completion("c", 0, "m", events, logprobs=2)
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["He", "llo"], "token_logprobs": [-0.5, -1.25],
        "top_logprobs": [{"He": -0.5, "": -2.0}, {"y": -1.0, "llo": -1.25}], "text_offset": [0, 2]}
    assert convert.text_completion("c", 0, "m", events, logprobs=0)["choices"][0]["logprobs"]["top_logprobs"] is None
    assert convert.text_completion("c", 0, "m", events)["choices"][0]["logprobs"] is None
    s = convert.CompletionStream("c", 0, "m", logprobs=1)
    chunks = [c for kind, v in events for c in s.feed(kind, v)]
    streamed = [c["choices"][0]["logprobs"] for c in chunks]
    assert [(lp["tokens"], lp["text_offset"]) for lp in streamed] == [(["He"], [0]), (["llo"], [2]), ([], [])]
