"""A loaded stack file → `RenderInput`: the targets become the replicas, the models their names."""

from __future__ import annotations

from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from pydantic import ValidationError

from toolchain.render.model import RenderInput
from toolchain.stack.load import LoadedStack
from toolchain.stack.targets import targets

__all__ = ["default_out_dir", "render_changes", "render_input"]


def _replica(loaded: LoadedStack, name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.path not in ("", "/"):
        raise loaded.error(
            f"target {url} cannot sit behind the rendered nginx: replicas are reached over plain http "
            "at host:port (no path)",
            "targets",
            name,
            "url",
        )
    return parts.netloc


def render_input(loaded: LoadedStack) -> RenderInput:
    stack = loaded.stack
    replicas = [_replica(loaded, t.name, t.url) for t in targets(loaded)]
    try:
        return RenderInput(replicas=replicas, models=list(stack.models), proxy=stack.proxy, webui=stack.webui)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        section = "webui" if "preset" in message or "webui" in message or "model" in message else "targets"
        raise loaded.error(message, section) from None


def default_out_dir(loaded: LoadedStack) -> Optional[Path]:
    """`rendered/` beside the stack file (None when the stack is not on disk, e.g. read from git)."""
    local = loaded.source.local_path(loaded.path)
    return None if local is None else Path(local).parent / "rendered"


def render_changes(loaded: LoadedStack, out: Optional[Path] = None) -> list[tuple[str, str]]:
    """The rendered public files `stack render` would create, update or delete (for `stack plan`).

    Empty for a stack with neither `proxy` nor `webui` (nothing of the edge is declared).
    """
    from toolchain.render import files, render_public

    if loaded.stack.proxy is None and loaded.stack.webui is None:
        return []
    out_dir = out if out is not None else default_out_dir(loaded)
    if out_dir is None:
        return []
    return files.changes(out_dir, render_public(render_input(loaded)))
