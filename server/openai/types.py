"""The OpenAI requests this server accepts, as pydantic models (shape only).

These check JSON types (strictly: a string where a number belongs is a 400, not coerced) and
nothing else; what a value *means* (ranges, unsupported options, mapping to the native request)
is `server.openai.convert`'s job, so every rule lives in one place and is tested as a table.

Unknown keys are ignored, as Ollama and OpenAI's own clients expect (`user`, `metadata`,
`store`, `service_tier` and friends do not change what is generated). Known OpenAI parameters
that *would* change the answer and are not implemented are declared here so convert can refuse
them by name instead of ignoring them.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class StreamOptions(_Shape):
    include_usage: Optional[bool] = None


class FunctionCall(_Shape):
    name: str
    arguments: str = ""


class ToolCall(_Shape):
    id: Optional[str] = None
    type: Optional[str] = "function"
    function: FunctionCall


class ContentPart(_Shape):
    """One element of an array `content`: text, image_url, or a type this server refuses."""

    type: str
    text: Optional[str] = None
    image_url: Any = None
    refusal: Optional[str] = None


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(_Shape):
    role: Role
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning: Optional[str] = None
    refusal: Optional[str] = None


class FunctionDef(_Shape):
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(_Shape):
    type: str
    function: FunctionDef


class NamedToolChoiceFunction(_Shape):
    name: str


class NamedToolChoice(_Shape):
    type: str
    function: NamedToolChoiceFunction


class JsonSchemaFormat(_Shape):
    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class Reasoning(_Shape):
    effort: Optional[str] = None


class ResponseFormat(_Shape):
    type: str
    json_schema: Optional[JsonSchemaFormat] = None


class _Sampling(_Shape):
    """Parameters the chat and legacy completion endpoints share."""

    model: str = ""
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    stop: Union[str, list[Any], None] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    n: Optional[int] = None
    logit_bias: Optional[dict[str, Any]] = None
    # Ollama's: answer the rendered prompt in `_debug_info` instead of generating.
    debug_render_only: bool = Field(False, alias="_debug_render_only")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(default_factory=list)
    max_completion_tokens: Optional[int] = None
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list[Tool]] = None
    tool_choice: Union[str, NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    reasoning_effort: Optional[str] = None
    reasoning: Optional[Reasoning] = None  # {"effort": ...}, the newer spelling
    modalities: Optional[list[str]] = None
    # Accepted by OpenAI, not implemented here: refused by name when present.
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None


class CompletionRequest(_Sampling):
    prompt: Any = None
    suffix: Optional[str] = None
    echo: Optional[bool] = None
    best_of: Optional[int] = None
    logprobs: Optional[int] = None


class EmbeddingRequest(_Shape):
    model: str = ""
    input: Any = None
    encoding_format: Optional[str] = None
    dimensions: Optional[int] = None


def _is_member_name(part: str) -> bool:
    """pydantic's name for the union member it tried (`str`, `list[ContentPart]`, `ToolCall`)."""
    return part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper()


def validation_error(exc: ValidationError) -> tuple[str, Optional[str]]:
    """(message, param) for the most specific problem pydantic found, param as a dotted path with
    list indexes in brackets (`messages[0].content`), the way OpenAI names parameters."""
    err = max(exc.errors(), key=lambda e: len(e.get("loc", ())))
    param = ""
    for part in err.get("loc", ()):
        if isinstance(part, int):
            param += f"[{part}]"
        elif not _is_member_name(part):
            param += f".{part}" if param else part
    msg = err.get("msg", "invalid value")
    if not param:
        return msg, None
    if err.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    if err.get("type") in ("literal_error", "value_error"):
        return f"Invalid value for '{param}': {msg.removeprefix('Value error, ')}", param
    return f"Invalid type for '{param}': {msg}", param
