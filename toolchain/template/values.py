"""The Go values Ollama hands its templates, mirrored as Python data.

`.Messages` are `TemplateMessage`s, `.Tools` a `TemplateTools` list; tool-call arguments and
tool properties print as JSON (Ollama gives them a String method), property types print as
their name. Built from API-shaped dicts (`/api/chat` messages and tools) by `message_value`
and `tools_value`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from toolchain.template.gofmt import OrderedMap, marshal_json


def _plain(obj: Any) -> Any:
    """A pydantic model or mapping as a plain dict (other values unchanged)."""
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(exclude_none=True, by_alias=True)
    return obj


def go_numbers(v: Any) -> Any:
    """JSON numbers as Go decodes them into `any`: float64 (so they print like Ollama's)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, list):
        return [go_numbers(x) for x in v]
    if isinstance(v, dict):
        return {k: go_numbers(x) for k, x in v.items()}
    return v


class TemplateArgs(dict):
    """Tool-call arguments: a Go map that prints as JSON."""

    __go_type__ = "template.templateArgs"

    def __go_str__(self) -> str:
        return marshal_json(dict(self))


class PropertyType(list):
    """A JSON-schema type: one name or several; prints as the name (or `[a b]`)."""

    __go_type__ = "api.PropertyType"

    def __go_str__(self) -> str:
        if not self:
            return ""
        if len(self) == 1:
            return self[0]
        return "[" + " ".join(self) + "]"

    def __go_json__(self) -> Any:
        return self[0] if len(self) == 1 else list(self)


@dataclass
class ToolProperty:
    AnyOf: list = field(default_factory=list)
    Type: PropertyType = field(default_factory=PropertyType)
    Items: Any = None
    Description: str = ""
    Enum: list = field(default_factory=list)
    Properties: Optional[OrderedMap] = None
    Required: list = field(default_factory=list)

    __go_type__ = "api.ToolProperty"

    def __go_json__(self) -> Any:
        out = OrderedMap()
        if self.AnyOf:
            out["anyOf"] = self.AnyOf
        if self.Type:
            out["type"] = self.Type
        if self.Items is not None:
            out["items"] = self.Items
        if self.Description:
            out["description"] = self.Description
        if self.Enum:
            out["enum"] = self.Enum
        if self.Properties is not None:
            out["properties"] = self.Properties
        if self.Required:
            out["required"] = self.Required
        return out


class TemplateProperties(dict):
    """A tool's parameter properties: a Go map (sorted when ranged) that prints as JSON.
    `nil` marks a tool that gave no properties at all (JSON `null`, as in Ollama)."""

    __go_type__ = "template.templateProperties"
    nil = False

    def __go_str__(self) -> str:
        return marshal_json(dict(self))


@dataclass
class TemplateToolFunctionParameters:
    Type: str = ""
    Defs: Any = None
    Items: Any = None
    Required: list = field(default_factory=list)
    Properties: TemplateProperties = field(default_factory=TemplateProperties)

    __go_type__ = "template.templateToolFunctionParameters"

    def __go_str__(self) -> str:  # see TemplateToolFunction.__go_str__
        return marshal_json(self)

    def __go_json__(self) -> Any:
        out = OrderedMap(type=self.Type)
        if self.Defs is not None:
            out["$defs"] = self.Defs
        if self.Items is not None:
            out["items"] = self.Items
        if self.Required:
            out["required"] = self.Required
        out["properties"] = None if self.Properties.nil else dict(self.Properties)
        return out


@dataclass
class TemplateToolFunction:
    Name: str = ""
    Description: str = ""
    Parameters: TemplateToolFunctionParameters = field(default_factory=TemplateToolFunctionParameters)

    __go_type__ = "template.templateToolFunction"

    def __go_str__(self) -> str:
        # Deliberate difference from Ollama HEAD: its template copy of the tool function lost
        # the String method api.ToolFunction has, so `{{ .Function }}` (qwen2.5, llama3-groq...)
        # prints a Go struct there. We print the JSON those templates expect, as Ollama did
        # before January 2026 (its server/testdata/tools vectors).
        return marshal_json(self)

    def __go_json__(self) -> Any:
        return OrderedMap(name=self.Name, description=self.Description, parameters=self.Parameters)


@dataclass
class TemplateTool:
    Type: str = ""
    Items: Any = None
    Function: TemplateToolFunction = field(default_factory=TemplateToolFunction)

    __go_type__ = "template.templateTool"

    def __go_json__(self) -> Any:
        out = OrderedMap(type=self.Type)
        if self.Items is not None:
            out["items"] = self.Items
        out["function"] = self.Function
        return out

    def __go_str__(self) -> str:
        return marshal_json(self)


class TemplateTools(list):
    __go_type__ = "template.templateTools"

    def __go_str__(self) -> str:
        return marshal_json(list(self)) if self else "null"


@dataclass
class TemplateToolCallFunction:
    Index: int = 0
    Name: str = ""
    Arguments: TemplateArgs = field(default_factory=TemplateArgs)

    __go_type__ = "template.templateToolCallFunction"


@dataclass
class TemplateToolCall:
    ID: str = ""
    Function: TemplateToolCallFunction = field(default_factory=TemplateToolCallFunction)

    __go_type__ = "template.templateToolCall"


@dataclass
class TemplateMessage:
    Role: str = ""
    Content: str = ""
    Thinking: str = ""
    Images: list = field(default_factory=list)
    ToolCalls: list = field(default_factory=list)
    ToolName: str = ""
    ToolCallID: str = ""

    __go_type__ = "*template.templateMessage"


# -- builders from API-shaped data ----------------------------------------------------------------


def property_value(raw: Any) -> ToolProperty:
    raw = _plain(raw) or {}
    if not isinstance(raw, Mapping):
        return ToolProperty()
    type_ = raw.get("type")
    types = PropertyType([type_] if isinstance(type_, str) else [str(t) for t in type_ or []])
    props = raw.get("properties")
    nested = None
    if isinstance(props, Mapping):
        nested = OrderedMap((k, property_value(v)) for k, v in props.items())
    return ToolProperty(
        AnyOf=[property_value(p) for p in raw.get("anyOf") or []],
        Type=types,
        Items=go_numbers(raw.get("items")),
        Description=str(raw.get("description") or ""),
        Enum=go_numbers(list(raw.get("enum") or [])),
        Properties=nested,
        Required=list(raw.get("required") or []),
    )


def tool_value(raw: Any) -> TemplateTool:
    raw = _plain(raw) or {}
    fn = _plain(raw.get("function")) or {}
    params = _plain(fn.get("parameters")) or {}
    props = params.get("properties")
    properties = TemplateProperties((k, property_value(v)) for k, v in dict(props or {}).items())
    properties.nil = props is None
    return TemplateTool(
        Type=str(raw.get("type") or ""),
        Items=go_numbers(raw.get("items")),
        Function=TemplateToolFunction(
            Name=str(fn.get("name") or ""),
            Description=str(fn.get("description") or ""),
            Parameters=TemplateToolFunctionParameters(
                Type=str(params.get("type") or ""),
                Defs=go_numbers(params.get("$defs")),
                Items=go_numbers(params.get("items")),
                Required=list(params.get("required") or []),
                Properties=properties,
            ),
        ),
    )


def tools_value(tools: Any) -> TemplateTools:
    return TemplateTools(tool_value(t) for t in tools or [])


def tool_call_value(raw: Any) -> TemplateToolCall:
    raw = _plain(raw) or {}
    fn = _plain(raw.get("function")) or {}
    args = fn.get("arguments") or {}
    if isinstance(args, str):  # OpenAI-style JSON text
        import json

        try:
            args = json.loads(args)
        except ValueError:
            args = {}
    if not isinstance(args, Mapping):
        args = {}
    return TemplateToolCall(
        ID=str(raw.get("id") or ""),
        Function=TemplateToolCallFunction(
            Index=int(fn.get("index") or 0),
            Name=str(fn.get("name") or ""),
            Arguments=TemplateArgs(go_numbers(dict(args))),
        ),
    )


def message_value(raw: Any) -> TemplateMessage:
    raw = _plain(raw)
    return TemplateMessage(
        Role=str(raw.get("role") or ""),
        Content=str(raw.get("content") or ""),
        Thinking=str(raw.get("thinking") or ""),
        Images=list(raw.get("images") or []),
        ToolCalls=[tool_call_value(tc) for tc in raw.get("tool_calls") or []],
        ToolName=str(raw.get("tool_name") or ""),
        ToolCallID=str(raw.get("tool_call_id") or ""),
    )
