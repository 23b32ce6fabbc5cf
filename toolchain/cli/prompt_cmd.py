"""``stack prompt``: render a TEMPLATE over chat messages, exactly as the server would.

    stack prompt --template TEMPLATE.gotmpl --messages MESSAGES.json [--system TEXT] [--tools TOOLS.json]

Writes the rendered prompt to standard output with nothing added (no trailing newline).
MESSAGES.json is a JSON array of `/api/chat` messages; TOOLS.json an array of tool definitions.
`--system` acts as a model SYSTEM: it goes first unless the messages start with a system
message. ``-`` reads a file from standard input. No truncation (there is no tokenizer here).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer

from toolchain.cli import app
from toolchain.errors import CorralError
from toolchain.prompt import chat_messages, execute, Values


def _read(path: str, what: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except OSError as exc:
        raise CorralError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CorralError(f"{what} {path} is not UTF-8 text") from None


def _json_list(path: str, what: str) -> list:
    text = _read(path, what)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CorralError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise CorralError(f"{what} {path} must be a JSON array of objects")
    return data


def _messages(path: str) -> list[dict[str, Any]]:
    out = []
    for i, msg in enumerate(_json_list(path, "messages file")):
        role = msg.get("role")
        if not isinstance(role, str):
            raise CorralError(f"messages file {path}: message {i} has no string \"role\"")
        content = msg.get("content", "")
        if not isinstance(content, str):
            raise CorralError(f"messages file {path}: message {i} \"content\" must be a string")
        out.append({**msg, "role": role.lower(), "content": content})  # Ollama lower-cases roles
    return out


@app.command("prompt")
def prompt(
    template: str = typer.Option(..., "--template", help="TEMPLATE file (Go text/template), '-' for stdin."),
    messages: str = typer.Option(..., "--messages", help="JSON array of chat messages, '-' for stdin."),
    system: Optional[str] = typer.Option(None, "--system", help="A model SYSTEM prompt."),
    tools: Optional[str] = typer.Option(None, "--tools", help="JSON array of tool definitions."),
) -> None:
    """Render a chat prompt from a TEMPLATE and messages (Ollama's rules), to stdout."""
    if template == "-" and messages == "-":
        raise CorralError("--template and --messages cannot both read stdin")
    src = _read(template, "template")
    msgs = chat_messages(_messages(messages), model_system=system or "")
    tool_defs = _json_list(tools, "tools file") if tools else []
    text = execute(src, Values(messages=msgs, tools=tool_defs))
    sys.stdout.write(text)
    sys.stdout.flush()
