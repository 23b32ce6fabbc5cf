"""Ollama's CLI tables: borderless, each column padded to its widest cell, four spaces between
columns (tablewriter as `ollama list`/`ps`/`show` configure it). The human-readable formats used in
the cells are in `toolchain.format` (re-exported here)."""

from __future__ import annotations

from typing import Sequence

from toolchain.format import human_bytes, human_number, human_time, parse_time

__all__ = ["human_bytes", "human_number", "human_time", "parse_time", "table"]


def table(rows: Sequence[Sequence[str]], padding: str = "    ") -> str:
    if not rows:
        return ""
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(padding.join(cells).rstrip())
    return "\n".join(lines) + "\n"
