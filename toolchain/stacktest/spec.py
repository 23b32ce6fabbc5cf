"""Prompt regression tests in a stack: pydantic models of a test and its expectations (pure).

A test sends one chat to a model (a `prompt`, or `messages`, with an optional `system`) with
test defaults for the options (`temperature 0`, a fixed `seed`, a bounded `num_predict`) so the
answer is reproducible, and checks the answer against `expect:`. Tests are declared under a
model (`models.<name>.tests:`) or in test files the stack names (top-level `tests:`), each of
which maps model names to lists of tests. Everything is validated before anything runs: a bad
regex, JSON schema, option or type is an error located at its file and line.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Options every test runs with unless it sets them: deterministic, bounded answers.
DEFAULT_OPTIONS: dict[str, Any] = {"temperature": 0, "seed": 42, "num_predict": 256}
MAX_NUM_PREDICT = 8192


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


def _strings(value: Any) -> Any:
    """One string or a list of strings -> a list (how contains/not_contains/regex are written)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a string or a list of strings")
    return value


class Expect(_Strict):
    """What the answer must satisfy; every key is optional and they combine (all must hold)."""

    contains: list[str] = Field(default_factory=list, description="Text (or texts) the answer must contain.")
    not_contains: list[str] = Field(default_factory=list, description="Text (or texts) the answer must not contain.")
    case_sensitive: bool = Field(False, description="Match contains / not_contains with case (default: ignore case).")
    regex: list[str] = Field(
        default_factory=list, description="Python regular expression(s) the answer must match (re.search; use (?i) for case)."
    )
    json_schema: Optional[dict[str, Any]] = Field(
        None, description="The answer must parse as JSON and validate against this JSON Schema."
    )
    max_tokens: Optional[int] = Field(None, ge=1, description="At most this many generated tokens (eval_count).")
    max_seconds: Optional[float] = Field(
        None, gt=0, description="At most this many seconds to answer (server time, model loading not counted)."
    )
    equals: Optional[str] = Field(None, description="The exact answer (for answers that must not drift).")

    @field_validator("contains", "not_contains", "regex", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return _strings(value)

    @field_validator("contains", "not_contains")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(v == "" for v in value):
            raise ValueError("an empty string matches every answer")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        return value

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if value is not None:
            check_json_schema(value)
        return value


class TestCase(_Strict):
    """One prompt regression test of a model."""

    __test__ = False  # not a pytest class

    name: str = Field(min_length=1, description="Unique among the model's tests.")
    prompt: Optional[str] = Field(None, description="The user message (or give messages).")
    messages: Optional[list[Message]] = Field(None, description="A whole conversation; the model answers the last turn.")
    system: Optional[str] = Field(None, description="A system message sent first (overrides the model's SYSTEM).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Model options; tests default to {', '.join(f'{k} {v}' for k, v in DEFAULT_OPTIONS.items())}.",
    )
    format: Optional[Union[Literal["json"], dict[str, Any]]] = Field(
        None, description="Constrain the answer: json, or a JSON Schema."
    )
    expect: Expect = Field(default_factory=Expect, description="What the answer must satisfy.")

    @model_validator(mode="after")
    def _one_input(self) -> "TestCase":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a test needs exactly one of: prompt, messages")
        if self.messages is not None and not self.messages:
            raise ValueError("messages is empty")
        return self

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from toolchain.options import OPTIONS, validate_options

        unknown = [k for k in value if k not in OPTIONS]
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r}")
        checked = validate_options(value).values
        n = checked.get("num_predict")
        if n is not None and not 1 <= n <= MAX_NUM_PREDICT:
            raise ValueError(f"num_predict must be between 1 and {MAX_NUM_PREDICT} in a test (a test must end)")
        return checked

    @field_validator("format")
    @classmethod
    def _format(cls, value: Any) -> Any:
        if isinstance(value, dict):
            check_json_schema(value)
        return value

    def effective_options(self) -> dict[str, Any]:
        return {**DEFAULT_OPTIONS, **self.options}

    def chat_messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system is not None else []
        if self.messages is not None:
            msgs += [m.model_dump() for m in self.messages]
        else:
            msgs.append({"role": "user", "content": self.prompt or ""})
        return msgs

    def request(self, model: str) -> dict[str, Any]:
        """The /api/chat body of this test for `model`."""
        body: dict[str, Any] = {"model": model, "messages": self.chat_messages(), "options": self.effective_options()}
        if self.format is not None:
            body["format"] = self.format
        return body


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError when `schema` is not a valid JSON Schema."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"invalid JSON schema{f' at {where}' if where else ''}: {exc.message}") from None
