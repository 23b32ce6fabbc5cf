"""A loaded stack file → `RenderInput`: the targets become the replicas, the models their names."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ValidationError

from toolchain.render.model import RenderInput
from toolchain.stack.load import LoadedStack
from toolchain.stack.targets import targets

__all__ = ["render_input"]


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
