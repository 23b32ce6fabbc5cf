"""Ollama-style progress messages (pull, push) shown with rich: a bar per blob, a line per status.

Used by `stack pull`, `stack push`, `stack run` (pulling a missing model) and `stack apply`.
"""

from __future__ import annotations

from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def show_progress(messages: Iterator[dict[str, Any]], console: Console | None = None) -> None:
    """Render Ollama-style progress messages: bars for blobs, a line for every other status."""
    console = console or Console(stderr=True)
    bars: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        last_status = ""
        for message in messages:
            status = str(message.get("status", ""))
            digest = message.get("digest")
            if digest and "total" in message:
                total = int(message.get("total") or 0)
                completed = int(message.get("completed") or 0)
                if digest not in bars:
                    bars[digest] = progress.add_task(status, total=total)
                progress.update(bars[digest], total=total, completed=completed)
            elif status and status != last_status:
                progress.console.print(status)
            last_status = status
