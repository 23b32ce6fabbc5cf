"""Tool calls in model output, found the way Ollama's `tools` package finds them.

The tool-call *tag* comes from the model's TEMPLATE: the first non-blank text inside the
`{{ if .ToolCalls }}` block (cut before any `{`), e.g. `<tool_call>` or `[TOOL_CALLS]`; with
no such text the tag is `{` (any JSON object may be a call). Output before the tag is content.
After the tag, a call is a JSON object that names one of the request's tools and carries its
arguments (`{"name": ..., "arguments"|"parameters": {...}}`, nested, or arguments as JSON
text, or just the object following the tool's name). With a `{` or `[` tag, output that does
not start with JSON is plain content, and a complete JSON value that is not a call is given
back as content.

    parser = ToolCallParser(template_src, tools)
    for piece in stream:
        content, calls = parser.feed(piece)
    rest = parser.finish()

Calls have Ollama's API shape: `{"id": "call_xxxxxxxx", "function": {"index": 0, "name":
"get_weather", "arguments": {...}}}`.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from toolchain.template import Template, nodes, parse

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    """`call_` and 8 random [a-z0-9], like Ollama's ids."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


# -- the tag ------------------------------------------------------------------------------------


def _mentions_tool_calls(node: nodes.IfNode) -> bool:
    return any(
        isinstance(arg, nodes.FieldNode) and "ToolCalls" in arg.ident for cmd in node.pipe.cmds for arg in cmd.args
    )


def _find_tool_call_node(items: Sequence[Any]) -> Optional[nodes.IfNode]:
    for node in items:
        if isinstance(node, nodes.IfNode) and _mentions_tool_calls(node):
            return node
        if isinstance(node, nodes.ListNode):
            found = _find_tool_call_node(node.nodes)
        elif isinstance(node, nodes.BranchNode):
            found = _find_tool_call_node(node.list.nodes)
            if found is None and node.else_list is not None:
                found = _find_tool_call_node(node.else_list.nodes)
        else:
            continue
        if found is not None:
            return found
    return None


def _find_text(items: Sequence[Any]) -> Optional[str]:
    """The first non-blank text, not looking past an action or the end of a nested block."""
    for node in items:
        if isinstance(node, nodes.TextNode):
            if node.text.strip():
                return node.text
        elif isinstance(node, nodes.ListNode):
            found = _find_text(node.nodes)
            if found is not None:
                return found
        elif isinstance(node, nodes.BranchNode):
            found = _find_text(node.list.nodes)
            if found is None and node.else_list is not None:
                found = _find_text(node.else_list.nodes)
            return found
        elif isinstance(node, nodes.ActionNode):
            return None
    return None


def tool_call_tag(template: Union[str, Template, None]) -> str:
    """The text that starts tool calls in output of a model with this TEMPLATE ("{" if none)."""
    if not template:
        return "{"
    tmpl = template if isinstance(template, Template) else parse(template)
    node = _find_tool_call_node(tmpl.root.nodes)
    if node is None:
        return "{"
    text = _find_text(node.list.nodes)
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


# -- finding calls in a buffer --------------------------------------------------------------------


def _tool_name(tool: Any) -> str:
    dump = getattr(tool, "model_dump", None)
    if dump is not None:
        tool = dump()
    fn = tool.get("function") if isinstance(tool, dict) else None
    return str((fn or {}).get("name") or "")


def find_tool(names: Sequence[str], buf: str) -> tuple[Optional[str], int]:
    """(the tool named earliest in `buf`, longest name on ties; end of its name) — or None
    while `buf` ends with the beginning of a longer tool name, to wait for more text."""
    if not buf:
        return None, 0
    longest = max((len(n) for n in names), default=0)
    for i in range(1, min(len(buf), longest) + 1):
        tail = buf[-i:]
        if any(len(tail) < len(name) and name.startswith(tail) for name in names):
            return None, 0
    found, start, end = None, -1, -1
    for name in names:
        if not name:
            continue
        pos = buf.find(name)
        if pos < 0:
            continue
        if start != -1 and (pos > start or (pos == start and len(name) <= len(found or ""))):
            continue
        found, start, end = name, pos, pos + len(name)
    return (found, end) if found is not None else (None, 0)


def _as_args(value: Any) -> tuple[Optional[dict], bool]:
    if isinstance(value, dict):
        return value, True
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None, False
        if isinstance(parsed, dict):
            return parsed, True
    return None, False


def _search(obj: dict, tool: str) -> tuple[Optional[dict], bool]:
    if "name" in obj:
        for key in ("arguments", "parameters"):
            args, ok = _as_args(obj.get(key))
            if ok:
                return args, True
        return None, True
    args, ok = _as_args(obj.get(tool))
    if ok:
        return args, True
    for value in obj.values():
        children = [value] if isinstance(value, dict) else [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        for child in children:
            args, ok = _search(child, tool)
            if ok:
                return args, True
    return None, False


def _outside_strings(buf: str) -> Iterator[tuple[int, str]]:
    """(index, char) of every character of `buf` outside JSON strings (quotes included in none)."""
    in_string = escaped = False
    for i, c in enumerate(buf):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_string = not in_string
        elif not in_string:
            yield i, c


def find_arguments(tool: str, buf: str) -> tuple[Optional[dict], int]:
    """The arguments of `tool` in the first complete JSON object of `buf` that holds them,
    and the index of that object's closing brace; (None, 0) if there is none yet."""
    start = -1
    depth = 0
    for i, c in _outside_strings(buf):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and start != -1:
                try:
                    data = json.loads(buf[start : i + 1])
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    start = -1
                    continue
                args, ok = _search(data, tool)
                return (args if ok else data), i
            depth = max(depth, 0)
    return None, 0


def _closed(tag: str, buf: str) -> bool:
    """With a `{` or `[` tag: the first JSON value in `buf` is complete."""
    pair = {"{": "{}", "[": "[]"}.get(tag)
    if pair is None:
        return False
    count = 0
    for _, c in _outside_strings(buf):
        if c == pair[0]:
            count += 1
        elif c == pair[1]:
            count -= 1
            if count == 0:
                return True
    return False


# -- the streaming parser -------------------------------------------------------------------------

_LOOKING, _CALLING, _DONE = "looking", "calling", "done"


class ToolCallParser:
    """Splits streamed model output into content and tool calls for one response."""

    def __init__(
        self,
        template: Union[str, Template, None],
        tools: Sequence[Any],
        *,
        tag: Optional[str] = None,
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        self.tag = tag if tag is not None else tool_call_tag(template)
        self.names = [n for n in (_tool_name(t) for t in tools) if n]
        self.new_id = new_id
        self.state = _LOOKING
        self.buffer = ""
        self.count = 0

    def _find_tag(self) -> tuple[int, bool]:
        i = self.buffer.find(self.tag)
        if i >= 0:
            return i, True
        for size in range(min(len(self.buffer), len(self.tag)), 0, -1):
            if self.buffer.endswith(self.tag[:size]):
                return len(self.buffer) - size, False
        return -1, False

    def _next_call(self) -> Optional[dict]:
        name, end = find_tool(self.names, self.buffer)
        if name is None:
            return None
        args, at = find_arguments(name, self.buffer)
        if args is None:
            return None
        call = {"id": self.new_id(), "function": {"index": self.count, "name": name, "arguments": args}}
        self.count += 1
        self.buffer = self.buffer[max(end, at) :]
        return call

    def feed(self, text: str) -> tuple[str, list[dict]]:
        """(content to show now, tool calls completed by this text)."""
        if self.state == _DONE:
            return text, []
        self.buffer += text
        content = ""
        if self.state == _LOOKING:
            i, found = self._find_tag()
            if i < 0:
                content, self.buffer = self.buffer, ""
            else:
                content, self.buffer = self.buffer[:i], self.buffer[i:]
            if self.tag in ("{", "[") and content.strip():
                self.state = _DONE
                rest, self.buffer = content + self.buffer, ""
                return rest, []
            if not found:
                return content, []
            self.state = _CALLING
        calls = []
        while (call := self._next_call()) is not None:
            calls.append(call)
        if _closed(self.tag, self.buffer):
            self.state = _DONE
            content, self.buffer = self.buffer, ""
        return content, calls

    def finish(self) -> str:
        """Content still held back at the end of the output: a JSON value that was not a
        call, or text that only looked like the start of the tag."""
        rest, self.buffer = self.buffer, ""
        if self.state == _LOOKING:
            return rest  # a partial tag at the very end is just text
        if self.count > 0 or self.tag not in ("{", "["):
            return ""
        return rest
