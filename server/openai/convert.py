"""Pure conversions between OpenAI's API and the server's own inference types.

Requests: an OpenAI request (`server.openai.types`) becomes the same internal request the native
routes build — a `TextJob` for chat and completions, an `EmbedPlan` for embeddings — so the two
APIs cannot drift. Every rule about what an OpenAI parameter means is here, and every parameter
that would change the answer but is not implemented is refused with a 400 naming it.

Results: the engine's events (`("text", str)`, `("thinking", str)`, `("logprobs", [native
entry, ...])`, `("tool_calls", [native call, ...])`, `("done", Final)`) become `chat.completion` / `chat.completion.chunk` /
`text_completion` objects; embeddings become an `embedding` list; stored models become `model`
objects. Nothing here does I/O; ids and timestamps are parameters.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from server.inference_types import Message, TextJob, ToolCall, ToolCallFunction
from server.openai.errors import OpenAIError
from server.openai.types import ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest

FINGERPRINT = "fp_ollama"

_ALPHANUM = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """An OpenAI-style identifier: `chatcmpl-…`, `cmpl-…`, `call_…`."""
    return prefix + "".join(secrets.choice(_ALPHANUM) for _ in range(length))


def _bad(message: str, param: Optional[str] = None) -> OpenAIError:
    return OpenAIError(message, 400, param=param)


# -- sampling parameters (shared by chat and completions) ----------------------------------------


def _in_range(value: Optional[float], low: float, high: float, param: str) -> Optional[float]:
    if value is not None and not low <= value <= high:
        raise _bad(f"Invalid value for '{param}': {value} is not between {low:g} and {high:g}.", param)
    return value


def stop_sequences(stop: Any) -> Optional[list[str]]:
    """`stop` as a string or a list of strings; anything else in the list is a 400 (Ollama's chat
    layer silently drops it, which would change where generation ends)."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else []
    for item in stop:
        if not isinstance(item, str):
            raise _bad(f"invalid type for 'stop' field: {type(item).__name__}", "stop")
    return [item for item in stop if item]  # an empty sequence would end every answer at once


def sampling_options(req: Any, max_tokens: Optional[int], max_param: str = "max_tokens") -> dict[str, Any]:
    """The native `options` for the sampling parameters both endpoints share.

    As in Ollama's OpenAI layer, `temperature` and `top_p` default to OpenAI's 1.0 when absent
    (so they override a Modelfile's PARAMETERs, exactly as on Ollama's /v1 routes).
    """
    if req.n is not None and req.n != 1:
        raise _bad("n must be 1: this server generates one choice per request" if req.n > 1
                   else f"Invalid value for 'n': {req.n} is less than the minimum of 1.", "n")
    if req.logit_bias:
        raise _bad("logit_bias is not supported by this server", "logit_bias")
    options: dict[str, Any] = {}
    if max_tokens is not None:
        if max_tokens < 1:
            raise _bad(f"Invalid value for '{max_param}': {max_tokens} is less than the minimum of 1.", max_param)
        options["num_predict"] = max_tokens
    temperature = _in_range(req.temperature, 0.0, 2.0, "temperature")
    options["temperature"] = 1.0 if temperature is None else temperature
    top_p = _in_range(req.top_p, 0.0, 1.0, "top_p")
    options["top_p"] = 1.0 if top_p is None else top_p
    for name in ("frequency_penalty", "presence_penalty"):
        value = _in_range(getattr(req, name), -2.0, 2.0, name)
        if value is not None:
            options[name] = value
    if req.seed is not None:
        options["seed"] = req.seed
    stop = stop_sequences(req.stop)
    if stop:
        options["stop"] = stop
    return options


# -- chat requests -----------------------------------------------------------------------------


_IMAGE_PREFIXES = tuple(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp")) + ("data:;base64,",)


def image_data(url: Any, param: str) -> str:
    """The base64 payload of an `image_url` data URI (the native API's image encoding)."""
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise _bad("invalid message format: image_url must be a string or an object with a 'url'", param)
    if url.startswith(("http://", "https://")):
        raise _bad("image URLs are not currently supported, please use base64 encoded data instead", param)
    for prefix in _IMAGE_PREFIXES:
        if url.startswith(prefix):
            payload = url[len(prefix):]
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                break
            return payload
    raise _bad("invalid image input", param)


def _tool_call_arguments(raw: str, param: str) -> dict[str, Any]:
    if raw.strip() == "":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise _bad("invalid tool call arguments", param) from None
    if not isinstance(value, dict):
        raise _bad("invalid tool call arguments: must be a JSON object", param)
    return value


def _tool_name(messages: list[ChatMessage], upto: int, call_id: str) -> Optional[str]:
    """The function name of the latest earlier tool call with `call_id` (last one wins)."""
    for msg in reversed(messages[:upto]):
        for call in msg.tool_calls or ():
            if call.id == call_id:
                return call.function.name
    return None


def chat_messages(messages: list[ChatMessage]) -> list[Message]:
    """OpenAI messages as native ones: one native message per OpenAI message (text parts joined
    by newlines, images collected), `developer` as `system`, `reasoning` as `thinking`, tool
    results named after the call they answer."""
    if not messages:
        raise _bad("[] is too short - 'messages'", "messages")
    out: list[Message] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = "system" if msg.role == "developer" else msg.role
        if role == "function":
            raise _bad("the 'function' role is deprecated and not supported; use 'tool' messages", f"{where}.role")
        texts: list[str] = []
        images: list[str] = []
        if msg.content is None:
            if role != "assistant":
                raise _bad(f"{where}.content is required for role '{msg.role}'", f"{where}.content")
        elif isinstance(msg.content, str):
            texts.append(msg.content)
        else:
            for j, part in enumerate(msg.content):
                at = f"{where}.content[{j}]"
                if part.type == "text":
                    if part.text is None:
                        raise _bad("invalid message format: a text part needs 'text'", at)
                    texts.append(part.text)
                elif part.type == "refusal" and role == "assistant":
                    texts.append(part.refusal or "")
                elif part.type == "image_url":
                    images.append(image_data(part.image_url, at))
                else:
                    raise _bad(f"content parts of type '{part.type}' are not supported", f"{at}.type")
        calls = None
        if msg.tool_calls:
            if role != "assistant":
                raise _bad("only assistant messages can have tool_calls", f"{where}.tool_calls")
            calls = []
            for k, call in enumerate(msg.tool_calls):
                if call.type not in (None, "function"):
                    raise _bad(f"tool calls of type '{call.type}' are not supported", f"{where}.tool_calls[{k}].type")
                args = _tool_call_arguments(call.function.arguments, f"{where}.tool_calls[{k}].function.arguments")
                calls.append(ToolCall(id=call.id, function=ToolCallFunction(name=call.function.name, arguments=args)))
        tool_name = None
        if role == "tool":
            tool_name = msg.name or (_tool_name(messages, i, msg.tool_call_id) if msg.tool_call_id else None)
        out.append(Message(
            role=role, content="\n".join(texts), thinking=msg.reasoning or None, images=images or None,
            tool_calls=calls, tool_name=tool_name, tool_call_id=msg.tool_call_id if role == "tool" else None,
        ))
    return out


def chat_tools(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The tools the model is offered: all of them, or none with `tool_choice: "none"`."""
    tools = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function":
            raise _bad(f"tools of type '{tool.type}' are not supported", f"tools[{i}].type")
        function: dict[str, Any] = {"name": tool.function.name}
        if tool.function.description is not None:
            function["description"] = tool.function.description
        function["parameters"] = tool.function.parameters or {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": function})
    return [] if req.tool_choice == "none" else tools


def call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call of `tool`: `{"name": <its name>, "arguments": <its parameters>}`."""
    function = tool["function"]
    return {"type": "object",
            "properties": {"name": {"type": "string", "enum": [function["name"]]},
                           "arguments": function.get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"]}


def forced_call_format(req: ChatCompletionRequest, tools: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """For `tool_choice` "required" or a named function: the format (grammar) that makes the
    model's whole answer one call — of the named tool, or of any offered tool. None for "auto"
    and "none", which leave the choice to the model."""
    choice = req.tool_choice
    if choice is None or choice in ("auto", "none"):
        return None
    if isinstance(choice, str) and choice != "required":
        raise _bad(f"Invalid value for 'tool_choice': '{choice}'. Supported values: 'none', 'auto', 'required'.",
                   "tool_choice")
    if not tools:
        raise _bad("tool_choice needs tools to choose from", "tool_choice")
    if req.response_format is not None and req.response_format.type.strip().lower() != "text":
        raise _bad("response_format cannot be combined with a tool_choice that forces a call", "response_format")
    if isinstance(choice, str):  # "required"
        schemas = [call_schema(t) for t in tools]
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if choice.type != "function":
        raise _bad(f"tool_choice of type '{choice.type}' is not supported", "tool_choice.type")
    for tool in tools:
        if tool["function"]["name"] == choice.function.name:
            return call_schema(tool)
    raise _bad(f"tool_choice names '{choice.function.name}', which is not among the tools",
               "tool_choice.function.name")


def forced_call(text: str) -> Optional[dict[str, Any]]:
    """The call in an answer constrained by `forced_call_format` (native shape), or None when
    the answer is not one (cut short by max_tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) \
            or not isinstance(value.get("arguments"), dict):
        return None
    return {"function": {"name": value["name"], "arguments": value["arguments"]}}


def response_format(req: ChatCompletionRequest) -> Any:
    """The native `format`: "json" for json_object, the schema for json_schema, None for text."""
    fmt = req.response_format
    if fmt is None:
        return None
    kind = fmt.type.strip().lower()
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise _bad("response_format of type 'json_schema' needs json_schema.schema",
                       "response_format.json_schema")
        return fmt.json_schema.schema_
    raise _bad(f"Invalid value for 'response_format.type': '{fmt.type}'. "
               "Supported values: 'text', 'json_object', 'json_schema'.", "response_format.type")


_EFFORT = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "max": "max",
           "xhigh": "max", "ultra": "max"}


def think_value(effort: Optional[str]) -> Any:
    """Ollama's mapping of `reasoning_effort` to `think` (clamping OpenAI's extra tiers)."""
    if effort is None or effort == "":
        return None
    if effort not in _EFFORT:
        raise _bad(f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", "xhigh", '
                   '"ultra", "max", or "none")', "reasoning_effort")
    return _EFFORT[effort]


def _refuse_present(req: Any, names: Iterable[str], why: str = "is not supported by this server") -> None:
    for name in names:
        if getattr(req, name) is not None:
            hint = " (use 'tools')" if name in ("functions", "function_call") else ""
            raise _bad(f"'{name}' {why}{hint}", name)


@dataclass
class ChatPlan:
    """A chat completion to run: the shared internal job plus what only the OpenAI side needs."""

    job: TextJob
    stream: bool
    include_usage: bool
    parallel_tool_calls: bool = True
    forced_call: bool = False  # tool_choice forces a call: the answer is one call's JSON

    @property
    def logprobs(self) -> bool:
        return self.job.logprobs


def chat_request(req: ChatCompletionRequest) -> ChatPlan:
    if not req.model:
        raise _bad("you must provide a model parameter", "model")
    _refuse_present(req, ("audio", "prediction", "web_search_options", "functions", "function_call"))
    top_logprobs = chat_top_logprobs(req)
    if req.modalities is not None and any(m != "text" for m in req.modalities):
        raise _bad("only the 'text' modality is supported", "modalities")
    max_tokens, param = req.max_completion_tokens, "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = req.max_tokens, "max_tokens"
    elif req.max_tokens is not None and req.max_tokens != req.max_completion_tokens:
        raise _bad("max_tokens and max_completion_tokens disagree; send one of them", "max_tokens")
    messages = chat_messages(req.messages)
    tools = chat_tools(req)
    forced = forced_call_format(req, tools)
    job = TextJob(
        model=req.model, kind="chat", messages=messages, tools=tools,
        images=[img for m in messages for img in (m.images or ())],
        format=forced if forced is not None else response_format(req),
        options=sampling_options(req, max_tokens, param), think=think_value(req.reasoning.effort if req.reasoning is not None else req.reasoning_effort),
        debug_render_only=req.debug_render_only, logprobs=bool(req.logprobs), top_logprobs=top_logprobs,
    )
    return ChatPlan(job=job, stream=bool(req.stream) and not req.debug_render_only,
                    include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
                    parallel_tool_calls=req.parallel_tool_calls is not False, forced_call=forced is not None)


MAX_TOP_LOGPROBS = 20  # OpenAI's bound for chat, Ollama's for both APIs


def chat_top_logprobs(req: ChatCompletionRequest) -> int:
    """`top_logprobs` (0-20), which needs `logprobs: true`, as OpenAI checks."""
    top = req.top_logprobs
    if top is None:
        return 0
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise _bad(f"Invalid value for 'top_logprobs': {top} is not between 0 and {MAX_TOP_LOGPROBS}.",
                   "top_logprobs")
    if top and not req.logprobs:
        raise _bad("Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
                   "top_logprobs")
    return top


# -- completion requests -----------------------------------------------------------------------


@dataclass
class CompletionPlan:
    job: TextJob
    stream: bool
    include_usage: bool
    echo: str = ""  # text to put before the generated text (`echo: true`)


def completion_prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        value = prompt
    elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        value = prompt[0]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise _bad("a list of several prompts is not supported; send one prompt per request", "prompt")
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) and not isinstance(p, bool)
                                                      for p in prompt):
        raise _bad("prompts as token arrays are not supported; send the prompt as a string", "prompt")
    elif prompt is None:
        raise _bad("you must provide a prompt", "prompt")
    else:
        raise _bad("Invalid type for 'prompt': expected a string", "prompt")
    return value


def completion_request(req: CompletionRequest) -> CompletionPlan:
    if not req.model:
        raise _bad("you must provide a model parameter", "model")
    prompt = completion_prompt(req.prompt)
    if not prompt and not req.suffix:
        raise _bad("prompt must not be empty", "prompt")
    if req.best_of is not None and req.best_of != 1:
        raise _bad("best_of must be 1: this server generates one choice per request", "best_of")
    if req.logprobs is not None:
        if not 0 <= req.logprobs <= MAX_TOP_LOGPROBS:
            raise _bad(f"Invalid value for 'logprobs': {req.logprobs} is not between 0 and {MAX_TOP_LOGPROBS}.",
                       "logprobs")
        if req.echo:
            raise _bad("logprobs of the echoed prompt are not supported by this server; drop 'echo' or 'logprobs'",
                       "logprobs")
    job = TextJob(model=req.model, kind="generate", prompt=prompt, suffix=req.suffix or "",
                  options=sampling_options(req, req.max_tokens), debug_render_only=req.debug_render_only,
                  logprobs=req.logprobs is not None, top_logprobs=req.logprobs or 0)
    return CompletionPlan(job=job, stream=bool(req.stream) and not req.debug_render_only,
                          include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
                          echo=prompt if req.echo else "")


# -- embedding requests ------------------------------------------------------------------------


@dataclass
class EmbedPlan:
    model: str
    inputs: list[str]
    dimensions: Optional[int]
    base64: bool


def embedding_request(req: EmbeddingRequest) -> EmbedPlan:
    if not req.model:
        raise _bad("you must provide a model parameter", "model")
    value = req.input
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        inputs = list(value)
    elif isinstance(value, list) and value and all(isinstance(v, (int, list)) and not isinstance(v, bool)
                                                    for v in value):
        raise _bad("inputs as token arrays are not supported; send strings", "input")
    else:
        raise _bad("invalid input", "input")
    fmt = (req.encoding_format or "float").lower()
    if fmt not in ("float", "base64"):
        raise _bad(f"Invalid value for 'encoding_format' = {req.encoding_format}. "
                   "Supported values: ['float', 'base64'].", "encoding_format")
    if req.dimensions is not None and req.dimensions < 1:
        raise _bad(f"Invalid value for 'dimensions': {req.dimensions} is less than the minimum of 1.", "dimensions")
    return EmbedPlan(model=req.model, inputs=inputs, dimensions=req.dimensions, base64=fmt == "base64")


# -- results -----------------------------------------------------------------------------------


def usage(final: Any) -> dict[str, Any]:
    """OpenAI's usage: every prompt token (cached ones too, reported in prompt_tokens_details),
    where Ollama's /v1 reports only the evaluated ones (prompt_eval_count)."""
    prompt = int(getattr(final, "prompt_tokens", 0) or final.prompt_eval_count or 0)
    completion = int(final.eval_count or 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    cached = int(getattr(final, "cached_tokens", 0) or 0)
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def finish_reason(done_reason: Optional[str], tool_calls: bool) -> str:
    reason = done_reason or "stop"
    return "tool_calls" if reason == "stop" and tool_calls else reason


def tool_calls(native: list[dict[str, Any]], first_index: int = 0,
               call_id: Callable[[], str] = lambda: new_id("call_")) -> list[dict[str, Any]]:
    """Native tool calls (arguments an object) as OpenAI's (arguments a JSON string, an id each)."""
    out = []
    for n, call in enumerate(native):
        function = call.get("function") or {}
        out.append({
            "id": call.get("id") or call_id(),
            "index": first_index + n,
            "type": "function",
            "function": {"name": function.get("name", ""),
                         "arguments": json.dumps(function.get("arguments") or {}, ensure_ascii=False)},
        })
    return out


def token_logprob(native: dict[str, Any]) -> dict[str, Any]:
    """A native logprob entry (Ollama's shape) as OpenAI's `ChatCompletionTokenLogprob`."""
    def one(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": e.get("bytes") or None}

    return {**one(native), "top_logprobs": [one(a) for a in native.get("top_logprobs", ())]}


def chat_logprobs(native: list[dict[str, Any]]) -> dict[str, Any]:
    """A choice's `logprobs` object for chat: `{"content": [...], "refusal": null}`."""
    return {"content": [token_logprob(e) for e in native], "refusal": None}


def completion_logprobs(native: list[dict[str, Any]], offset: int = 0,
                        top: bool = True) -> dict[str, Any]:
    """A choice's `logprobs` for the legacy completions: parallel lists of tokens, their logprobs,
    the alternatives as {token: logprob} (null with `logprobs: 0`) and each token's character
    offset in the text (starting at `offset`)."""
    offsets = []
    for e in native:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in native],
        "token_logprobs": [e["logprob"] for e in native],
        "top_logprobs": [{a["token"]: a["logprob"] for a in e.get("top_logprobs", ())} for e in native]
        if top else None,
        "text_offset": offsets,
    }


@dataclass
class _Collected:
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    final: Any = None
    debug: Optional[dict[str, Any]] = None

    def finish_reason(self, tool_calls: bool) -> Optional[str]:
        return None if self.final is None else finish_reason(self.final.done_reason, tool_calls)

    def usage(self) -> dict[str, Any]:
        return usage(self.final) if self.final is not None else {"prompt_tokens": 0, "completion_tokens": 0,
                                                                 "total_tokens": 0}


def _collect(events: Iterable[tuple[str, Any]]) -> _Collected:
    c = _Collected()
    for kind, value in events:
        if kind == "text":
            c.text.append(value)
        elif kind == "thinking":
            c.thinking.append(value)
        elif kind == "logprobs":
            c.logprobs.extend(value)
        elif kind == "tool_calls":
            c.calls.extend(value)
        elif kind == "done":
            c.final = value
        elif kind == "debug":
            c.debug = value
    return c


def _as_forced_call(c: _Collected) -> None:
    if not c.calls:
        call = forced_call("".join(c.text))
        if call is not None:
            c.calls, c.text = [call], []
    elif not "".join(c.text).strip():
        c.text = []  # the grammar's whitespace around a call the engine already parsed


def chat_completion(id: str, created: int, model: str, events: Iterable[tuple[str, Any]], *,
                    parallel_tool_calls: bool = True, forced_call: bool = False, logprobs: bool = False,
                    call_id: Callable[[], str] = lambda: new_id("call_")) -> dict[str, Any]:
    """The `chat.completion` object for a whole (non-streamed) generation."""
    c = _collect(events)
    if forced_call:
        _as_forced_call(c)
    calls = tool_calls(c.calls, call_id=call_id)
    if not parallel_tool_calls:
        calls = calls[:1]
    content = "".join(c.text)
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if c.thinking:
        message["reasoning"] = "".join(c.thinking)
    if calls:
        message["tool_calls"] = calls
    body = {
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": chat_logprobs(c.logprobs) if logprobs else None,
                     "finish_reason": c.finish_reason(bool(calls))}],
        "usage": c.usage(),
    }
    if c.debug is not None:
        body["_debug_info"] = c.debug
    return body


class ChatStream:
    """Turns engine events into `chat.completion.chunk` objects, one event at a time.

    The first chunk carries `role`; tool calls are streamed whole, one delta each, with running
    indexes; the end is a chunk with an empty delta and the finish reason, then (with
    `include_usage`) one with no choices and the usage. Logprob entries ride on the next chunk
    with a delta (those left at the end, on the finish chunk).
    """

    def __init__(self, id: str, created: int, model: str, *, include_usage: bool = False,
                 parallel_tool_calls: bool = True, forced_call: bool = False, logprobs: bool = False,
                 call_id: Callable[[], str] = lambda: new_id("call_")) -> None:
        self.logprobs = logprobs
        self.lps: list[dict[str, Any]] = []  # entries waiting for the next chunk
        self.id, self.created, self.model = id, created, model
        self.forced_call = forced_call
        self.held: list[str] = []  # a forced call's JSON, turned into a call at the end
        self.include_usage = include_usage
        self.parallel_tool_calls = parallel_tool_calls
        self.call_id = call_id
        self.started = False
        self.calls_sent = 0

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT, "choices": choices, **extra}

    def _take_logprobs(self) -> Optional[dict[str, Any]]:
        if not self.lps:
            return None
        lps, self.lps = self.lps, []
        return chat_logprobs(lps)

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        if not self.started:
            delta = {"role": "assistant", **delta}
            self.started = True
        return self._chunk([{"index": 0, "delta": delta, "logprobs": self._take_logprobs(), "finish_reason": None}])

    def feed(self, kind: str, value: Any) -> list[dict[str, Any]]:
        if kind == "logprobs":
            if self.logprobs:
                self.lps.extend(value)
            return []
        if kind == "text" and self.forced_call:
            self.held.append(value)
            return []
        if kind == "done" and self.held:
            text, self.held = "".join(self.held), []
            call = None if self.calls_sent else forced_call(text)
            if call is not None:
                first = self.feed("tool_calls", [call])
            else:  # cut short, or the grammar's whitespace around a call the engine parsed
                first = [self._delta({"content": text})] if text.strip() else []
            return first + self.feed(kind, value)
        if kind == "text":
            return [self._delta({"content": value})] if value or not self.started else []
        if kind == "thinking":
            return [self._delta({"reasoning": value})] if value else []
        if kind == "tool_calls":
            calls = tool_calls(value, self.calls_sent, self.call_id)
            if not self.parallel_tool_calls:
                calls = calls[: max(0, 1 - self.calls_sent)]
            if not calls:
                return []
            self.calls_sent += len(calls)
            return [self._delta({"tool_calls": calls})]
        if kind == "done":
            out = [] if self.started else [self._delta({"content": ""})]
            reason = finish_reason(value.done_reason, self.calls_sent > 0)
            out.append(self._chunk([{"index": 0, "delta": {}, "logprobs": self._take_logprobs(),
                                     "finish_reason": reason}]))
            if self.include_usage:
                out.append(self._chunk([], usage=usage(value)))
            return out
        return []


def text_completion(id: str, created: int, model: str, events: Iterable[tuple[str, Any]],
                    echo: str = "", logprobs: Optional[int] = None) -> dict[str, Any]:
    """The `text_completion` object for a whole (non-streamed) generation; `logprobs` is the
    request's (the number of alternatives, None when not asked)."""
    c = _collect(events)
    lps = None if logprobs is None else completion_logprobs(c.logprobs, top=logprobs > 0)
    body = {
        "id": id, "object": "text_completion", "created": created, "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"text": echo + "".join(c.text), "index": 0, "logprobs": lps,
                     "finish_reason": c.finish_reason(False)}],
        "usage": c.usage(),
    }
    if c.debug is not None:
        body["_debug_info"] = c.debug
    return body


class CompletionStream:
    """Engine events as streamed `text_completion` chunks (OpenAI's legacy completions)."""

    def __init__(self, id: str, created: int, model: str, *, include_usage: bool = False, echo: str = "",
                 logprobs: Optional[int] = None) -> None:
        self.id, self.created, self.model = id, created, model
        self.include_usage = include_usage
        self.echo = echo
        self.logprobs = logprobs  # the request's: alternatives per token, None when not asked
        self.lps: list[dict[str, Any]] = []  # entries waiting for the next chunk
        self.offset = 0  # characters of text sent so far (text_offset of the next token)

    def _take_logprobs(self) -> Optional[dict[str, Any]]:
        if self.logprobs is None:
            return None
        lps, self.lps = self.lps, []
        out = completion_logprobs(lps, self.offset, top=self.logprobs > 0)
        self.offset += sum(len(e["token"]) for e in lps)
        return out

    def _chunk(self, text: str, reason: Optional[str]) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                 "system_fingerprint": FINGERPRINT,
                 "choices": [{"text": text, "index": 0, "logprobs": self._take_logprobs(), "finish_reason": reason}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, kind: str, value: Any) -> list[dict[str, Any]]:
        if kind == "logprobs":
            self.lps.extend(value)
            return []
        out = []
        if self.echo and kind in ("text", "done"):
            out.append(self._chunk(self.echo, None))
            self.echo = ""
        if kind == "text" and value:
            out.append(self._chunk(value, None))
        elif kind == "done":
            out.append(self._chunk("", finish_reason(value.done_reason, False)))
            if self.include_usage:
                out.append({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(value)})
        return out


def embedding_vector(vector: list[float], as_base64: bool) -> Any:
    """A vector as floats, or as base64 of its little-endian float32 bytes (what the SDK decodes)."""
    if as_base64:
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return [float(v) for v in vector]


def embedding_list(model: str, vectors: list[list[float]], prompt_tokens: int, as_base64: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": embedding_vector(v, as_base64), "index": i}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_object(id: str, created: float, namespace: str) -> dict[str, Any]:
    """A `model` object: `owned_by` is the name's namespace ("library" for official models)."""
    return {"id": id, "object": "model", "created": int(created), "owned_by": namespace}


def model_list(models: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The `/v1/models` list (an empty store is `[]`, where Ollama answers `null`)."""
    return {"object": "list", "data": list(models)}
