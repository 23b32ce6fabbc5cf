"""Request types of the native inference API: keep_alive, strict JSON types, the TextJob."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from server.inference_types import ChatRequest, EmbeddingRequest, EmbedRequest, GenerateRequest, TextJob, \
    validation_message

@pytest.mark.parametrize("value, seconds", [(None, None), (0, 0.0), (42.5, 42.5), (-1, math.inf), ("5m", 300.0),
                                            ("0s", 0.0), ("-1m", math.inf)])
def test_keep_alive_is_parsed_into_seconds(value, seconds):
    assert GenerateRequest.model_validate({"model": "m", "keep_alive": value}).keep_alive == seconds


def test_generate_defaults_stream_and_empty_prompt():
    req = GenerateRequest.model_validate({"model": "m"})
    assert req.stream is True and req.prompt == "" and req.keep_alive is None
    job = TextJob.from_generate(req)
    assert job.is_empty and not job.keep_alive_set


def test_unload_request_is_recognised():
    job = TextJob.from_generate(GenerateRequest.model_validate({"model": "m", "keep_alive": 0}))
    assert job.is_empty and job.keep_alive_set and job.keep_alive == 0
    job = TextJob.from_chat(ChatRequest.model_validate({"model": "m", "messages": [], "keep_alive": "0s"}))
    assert job.is_empty and job.keep_alive == 0


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model": "m", "raw": "yes"}, "raw: Input should be a valid boolean"),
        ({"model": "m", "stream": "true"}, "stream: Input should be a valid boolean"),
        ({"model": "m", "prompt": 1}, "prompt: Input should be a valid string"),
        ({"model": "m", "keep_alive": "300"}, 'time: missing unit in duration "300"'),
        ({"model": "m", "keep_alive": True}, "Unsupported type: 'bool'"),
        ({"model": "m", "format": "xml"}, 'invalid format: "xml" (must be "json" or a JSON schema)'),
        ({"model": "m", "format": 3}, 'invalid format: must be "json" or a JSON schema object'),
        ({"model": "m", "options": []}, "options: Input should be a valid dictionary"),
    ],
)
def test_generate_bad_types_name_the_field(body, message):
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate(body)
    assert validation_message(info.value) == message


def test_format_json_and_schema_pass_through():
    assert GenerateRequest.model_validate({"model": "m", "format": "json"}).format == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert GenerateRequest.model_validate({"model": "m", "format": schema}).format == schema
    assert GenerateRequest.model_validate({"model": "m", "format": ""}).format is None


def test_chat_roles_are_lower_cased_and_null_content_is_empty():
    req = ChatRequest.model_validate({"model": "m", "messages": [{"role": "USER", "content": None}]})
    assert req.messages[0].role == "user" and req.messages[0].content == ""
    job = TextJob.from_chat(req)
    assert job.kind == "chat" and not job.is_empty


def test_chat_message_needs_a_role():
    with pytest.raises(ValidationError) as info:
        ChatRequest.model_validate({"model": "m", "messages": [{"content": "hi"}]})
    assert validation_message(info.value) == "messages.0.role: Field required"


def test_chat_images_are_collected_for_the_capability_check():
    req = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "see", "images": ["aGVsbG8="]}]})
    assert TextJob.from_chat(req).images == ["aGVsbG8="]


@pytest.mark.parametrize(
    "value, expected",
    [(None, []), ("", []), ("a", ["a"]), (["a", "b"], ["a", "b"]), ([], [])],
)
def test_embed_input_forms(value, expected):
    assert EmbedRequest.model_validate({"model": "m", "input": value}).input == expected


@pytest.mark.parametrize("value", [3, ["a", 1], {"a": 1}])
def test_embed_input_of_another_type(value):
    with pytest.raises(ValidationError) as info:
        EmbedRequest.model_validate({"model": "m", "input": value})
    assert validation_message(info.value) == "invalid input type"


def test_legacy_embeddings_request():
    assert EmbeddingRequest.model_validate({"model": "m"}).prompt == ""
