"""`stack test` expectations: a pure table of answer x expectation -> reasons."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolchain.stacktest.check import Answer, check
from toolchain.stacktest.spec import Expect

OBJ = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

CASES = [
    # (expect, answer text, tokens, seconds, reasons)
    ({}, "anything", None, None, []),
    ({"contains": "paris"}, "The capital is Paris.", 5, 0.1, []),
    ({"contains": "paris", "case_sensitive": True}, "The capital is Paris.", 5, 0.1, ["does not contain 'paris'"]),
    ({"contains": ["Paris", "France"]}, "Paris.", 5, 0.1, ["does not contain 'France'"]),
    ({"not_contains": "sorry"}, "Sorry, I cannot.", 5, 0.1, ["contains 'sorry'"]),
    ({"not_contains": "sorry", "case_sensitive": True}, "Sorry, I cannot.", 5, 0.1, []),
    ({"regex": r"^\d+$"}, "42", 1, 0.1, []),
    ({"regex": [r"^\d+$", "x"]}, "42", 1, 0.1, ["does not match /x/"]),
    ({"regex": "(?i)^yes"}, "YES!", 1, 0.1, []),
    ({"json_schema": OBJ}, '{"n": 3}', 4, 0.1, []),
    ({"json_schema": OBJ}, '{"n": "3"}', 4, 0.1, ["JSON does not match the schema at n: '3' is not of type 'integer'"]),
    ({"json_schema": OBJ}, "{}", 4, 0.1, ["JSON does not match the schema: 'n' is a required property"]),
    ({"json_schema": OBJ}, "not json", 4, 0.1, ["not JSON: Expecting value: line 1 column 1 (char 0)"]),
    ({"max_tokens": 10}, "x", 10, 0.1, []),
    ({"max_tokens": 10}, "x", 11, 0.1, ["11 tokens > max_tokens 10"]),
    ({"max_tokens": 10}, "x", None, 0.1, ["the server did not report a token count"]),
    ({"max_seconds": 2}, "x", 1, 1.5, []),
    ({"max_seconds": 2}, "x", 1, 2.5, ["2.50s > max_seconds 2"]),
    ({"equals": "Hello."}, "Hello.", 2, 0.1, []),
    ({"equals": "Hello."}, "Hello!", 2, 0.1, ["differs from equals at character 5"]),
    ({"equals": "Hello."}, "Hello. More", 2, 0.1, ["differs from equals at character 6"]),
    ({"equals": ""}, "", 0, 0.1, []),
    # combined: every unmet expectation is reported, in a fixed order
    ({"contains": "a", "not_contains": "b", "max_tokens": 1, "equals": "c"}, "b", 2, 0.1,
     ["does not contain 'a'", "contains 'b'", "2 tokens > max_tokens 1", "differs from equals at character 0"]),
]


@pytest.mark.parametrize("expect, text, tokens, seconds, reasons", CASES)
def test_check(expect, text, tokens, seconds, reasons):
    assert check(Answer(text, tokens, seconds), Expect.model_validate(expect)) == reasons


@pytest.mark.parametrize(
    "expect, message",
    [
        ({"regex": "(x"}, "invalid regex '(x'"),
        ({"contains": ""}, "an empty string matches every answer"),
        ({"contains": 3}, "expected a string or a list of strings"),
        ({"regex": ["a", 1]}, "expected a string or a list of strings"),
        ({"max_tokens": 0}, "greater than or equal to 1"),
        ({"max_seconds": -1}, "greater than 0"),
        ({"json_schema": {"type": 5}}, "invalid JSON schema"),
        ({"json_schema": "object"}, "valid dictionary"),
        ({"equal": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_expectations(expect, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        Expect.model_validate(expect)
