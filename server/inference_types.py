"""Request and response types of the native inference API, mirroring Ollama's `api/types.go`.

Requests are pydantic models (validated once per request). Responses are built as plain dicts
on the hot path (one per token), so nothing here is constructed per token.

`TextJob` is the one internal request type a generation is described by: the native
`/api/generate` and `/api/chat` routes build it, and so can an OpenAI-compatible layer, so that
behaviour cannot drift between the two APIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolchain.duration import FOREVER, parse_keep_alive

__all__ = [
    "ChatRequest",
    "EmbedRequest",
    "EmbeddingRequest",
    "FOREVER",
    "GenerateRequest",
    "Message",
    "TextJob",
    "ToolCall",
    "validation_message",
]

# keep_alive parsing is core's (toolchain.duration): seconds, FOREVER = math.inf, None = absent.


class _Request(BaseModel):
    # Unknown keys are ignored, as Ollama does; JSON types are checked strictly (a string
    # where a bool belongs is a 400, not silently coerced).
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    model: str = ""
    keep_alive: Any = None
    options: Optional[dict[str, Any]] = None

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: Any) -> Optional[float]:
        return parse_keep_alive(value)


def _check_format(value: Any) -> Any:
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    if isinstance(value, str):
        raise ValueError(f'invalid format: "{value}" (must be "json" or a JSON schema)')
    raise ValueError("invalid format: must be \"json\" or a JSON schema object")


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: Optional[int] = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Optional[str] = None
    function: ToolCallFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: str
    content: str = ""
    thinking: Optional[str] = None
    images: Optional[list[str]] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_name: Optional[str] = None
    tool_call_id: Optional[str] = None

    @field_validator("role")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, value: Any) -> Any:
        return "" if value is None else value

    def to_json(self) -> dict[str, Any]:
        """The message as Ollama serialises it (content always present, the rest omitempty)."""
        return self.model_dump(exclude_none=True)


Think = Union[bool, Literal["high", "medium", "low", "max"], None]


_LEVELS = ("high", "medium", "low", "max")


def _check_think(value: Any) -> Any:
    """Ollama's ThinkValue: a bool, one of its levels, or null; its messages otherwise."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in _LEVELS:
            return value
        raise ValueError(f'invalid think value: "{value}" (must be "high", "medium", "low", "max", true, or false)')
    raise ValueError('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def _check_top_logprobs(value: int) -> int:
    if not 0 <= value <= 20:
        raise ValueError("top_logprobs must be between 0 and 20")
    return value


class GenerateRequest(_Request):
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = Field(False, alias="_debug_render_only")
    prompt: str = ""
    suffix: str = ""
    system: Optional[str] = None
    template: Optional[str] = None
    context: Optional[list[int]] = None
    stream: Optional[bool] = True
    raw: bool = False
    format: Any = None
    images: Optional[list[str]] = None
    think: Think = None
    truncate: Optional[bool] = None
    shift: Optional[bool] = None

    _format = field_validator("format")(classmethod(lambda cls, v: _check_format(v)))
    _top_logprobs = field_validator("top_logprobs")(classmethod(lambda cls, v: _check_top_logprobs(v)))
    _think = field_validator("think", mode="before")(classmethod(lambda cls, v: _check_think(v)))

    @field_validator("prompt", "suffix", mode="before")
    @classmethod
    def _null_text(cls, value: Any) -> Any:
        return "" if value is None else value


class ChatRequest(_Request):
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = Field(False, alias="_debug_render_only")
    messages: list[Message] = Field(default_factory=list)
    tools: Optional[list[dict[str, Any]]] = None
    stream: Optional[bool] = True
    format: Any = None
    think: Think = None
    truncate: Optional[bool] = None
    shift: Optional[bool] = None

    _format = field_validator("format")(classmethod(lambda cls, v: _check_format(v)))
    _top_logprobs = field_validator("top_logprobs")(classmethod(lambda cls, v: _check_top_logprobs(v)))
    _think = field_validator("think", mode="before")(classmethod(lambda cls, v: _check_think(v)))

    @field_validator("messages", mode="before")
    @classmethod
    def _null_messages(cls, value: Any) -> Any:
        return [] if value is None else value


class EmbedRequest(_Request):
    input: Any = None
    truncate: Optional[bool] = True
    dimensions: Optional[int] = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError("invalid input type")


class EmbeddingRequest(_Request):
    prompt: str = ""


def validation_message(exc: ValidationError) -> str:
    """One line naming the offending field, for a 400 answer."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        if loc in ("input", "format", "keep_alive", "top_logprobs", "think") or \
                msg.startswith(("time:", "Unsupported", "invalid")):
            return msg
    return f"{loc}: {msg}" if loc else msg


@dataclass
class TextJob:
    """One text generation, independent of the API that asked for it.

    Exactly one of `prompt` (generate) or `messages` (chat) describes the input. `model` is the
    name as the client sent it (echoed back in responses).
    """

    model: str
    kind: Literal["generate", "chat"]
    prompt: str = ""
    suffix: str = ""
    system: Optional[str] = None
    template: Optional[str] = None
    raw: bool = False
    context: Optional[list[int]] = None
    images: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    format: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: Optional[float] = None
    keep_alive_set: bool = False
    think: Think = None
    truncate: bool = True
    shift: bool = True
    debug_render_only: bool = False  # Ollama's _debug_render_only: answer the rendered prompt
    logprobs: bool = False  # report each generated token's log probability
    top_logprobs: int = 0  # ... with this many most likely alternatives (0-20)

    @classmethod
    def from_generate(cls, req: GenerateRequest) -> "TextJob":
        return cls(
            model=req.model, kind="generate", prompt=req.prompt, suffix=req.suffix, system=req.system,
            template=req.template, raw=req.raw, context=req.context, images=list(req.images or ()),
            format=req.format, options=dict(req.options or {}), keep_alive=req.keep_alive,
            keep_alive_set="keep_alive" in req.model_fields_set and req.keep_alive is not None,
            think=req.think, truncate=req.truncate is not False, shift=req.shift is not False,
            debug_render_only=req.debug_render_only, logprobs=req.logprobs, top_logprobs=req.top_logprobs,
        )

    @classmethod
    def from_chat(cls, req: ChatRequest) -> "TextJob":
        return cls(
            model=req.model, kind="chat", messages=list(req.messages), tools=list(req.tools or ()),
            images=[img for m in req.messages for img in (m.images or ())],
            format=req.format, options=dict(req.options or {}), keep_alive=req.keep_alive,
            keep_alive_set="keep_alive" in req.model_fields_set and req.keep_alive is not None,
            think=req.think, truncate=req.truncate is not False, shift=req.shift is not False,
            debug_render_only=req.debug_render_only, logprobs=req.logprobs, top_logprobs=req.top_logprobs,
        )

    @property
    def is_empty(self) -> bool:
        """A load (or, with keep_alive 0, unload) request: nothing to generate."""
        return not self.messages if self.kind == "chat" else not self.prompt and not self.suffix
