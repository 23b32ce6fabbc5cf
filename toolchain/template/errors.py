"""The one exception of the template engine.

A `TemplateError` is a client error: a TEMPLATE that does not parse, or that fails while
rendering (a field on a nil value, a bad comparison, ...). It names the problem and where it
is in the source (1-based line and column).
"""

from __future__ import annotations

from toolchain.errors import CorralError


class TemplateError(CorralError):
    """A template failed to parse or to execute."""

    def __init__(self, reason: str, line: int = 0, col: int = 0) -> None:
        self.reason = reason
        self.line = line
        self.col = col
        where = f"line {line}, column {col}: " if line else ""
        super().__init__(f"template: {where}{reason}")


def position(src: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset in `src`."""
    offset = max(0, min(offset, len(src)))
    line = src.count("\n", 0, offset) + 1
    col = offset - (src.rfind("\n", 0, offset) + 1) + 1
    return line, col


def quote(text: str) -> str:
    """`text` in double quotes with Go-style escapes, as Go's %q shows names in messages."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'
