"""The actual state of a server, read through the public Ollama API only (`/api/tags`, `/api/show`).

Works against Ollama as well as `stack serve`. From `/api/show` it takes the `template`, `system`,
`license`, `messages` and `parameters` fields, and from the `modelfile` field the blob digests
of the weights (`FROM .../sha256-<hex>`) and adapters (`ADAPTER ...`), which come first in
Ollama's rendering. The state's fingerprint covers every model's name and manifest digest, so a
saved plan can tell whether the server changed since it was made.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Iterable, Mapping, Optional

from toolchain.client import Client
from toolchain.digests import digest_of
from toolchain.errors import APIError
from toolchain.stack.state import ModelState, display_name, key_of
from toolchain.stacktest.scratch import is_scratch

_BLOB = re.compile(r"sha256[-:]([0-9a-fA-F]{64})")
_INT = re.compile(r"^[+-]?\d+$")


def fingerprint(tags: Iterable[Mapping[str, Any]]) -> str:
    """A digest of (name, manifest digest) for every model a server lists."""
    rows = sorted(f"{key_of(t.get('name') or t.get('model') or '')}\t{_digest(t.get('digest'))}" for t in tags)
    return digest_of("\n".join(rows).encode())


def read(client: Client, show: Iterable[str] = ()) -> tuple[dict[str, ModelState], str]:
    """The server's models by key, and its fingerprint.

    Only models whose key is in `show` are read in full (one `/api/show` each); the others
    carry their name and manifest digest.
    """
    # scratch models of a running `stack test --plan` are not the stack's business (never pruned, not in the fingerprint)
    tags = [t for t in client.tags() if not is_scratch(t.get("name") or t.get("model") or "")]
    wanted = set(show)
    states: dict[str, ModelState] = {}
    for tag in tags:
        name = tag.get("name") or tag.get("model") or ""
        key = key_of(name)
        digest = _digest(tag.get("digest"))
        if key in wanted:
            try:
                states[key] = from_show(name, client.show(name), digest)
            except APIError as exc:
                if exc.status != 404:  # removed between the two calls: treat as absent
                    raise
        else:
            states[key] = ModelState(name=display_name(name), digest=digest)
    return states, fingerprint(tags)


def from_show(name: str, show: Mapping[str, Any], digest: Optional[str] = None) -> ModelState:
    """A `ModelState` from an `/api/show` response."""
    base, adapters = blob_digests(show.get("modelfile") or "")
    messages = show.get("messages")
    return ModelState(
        name=display_name(name),
        base=base,
        base_ref=(show.get("details") or {}).get("parent_model") or None,
        template=show.get("template") or "",
        system=show.get("system") or "",
        parameters=parse_parameters(show.get("parameters") or ""),
        messages=tuple((m.get("role", ""), m.get("content", "")) for m in messages) if messages else (),
        license=_license(show.get("license")),
        adapters=adapters,
        digest=digest,
    )


def blob_digests(modelfile: str) -> tuple[Optional[str], tuple[str, ...]]:
    """(weights digest, adapter digests) from the FROM/ADAPTER lines that open a rendered Modelfile."""
    base: Optional[str] = None
    adapters: list[str] = []
    for line in modelfile.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        word = word.upper()
        if word not in ("FROM", "ADAPTER", "DRAFT"):
            break  # TEMPLATE and everything after may contain any text
        match = _BLOB.search(rest)
        if not match:
            continue
        digest = "sha256:" + match.group(1).lower()
        if word == "FROM" and base is None:
            base = digest
        elif word == "ADAPTER":
            adapters.append(digest)
    return base, tuple(adapters)


def parse_parameters(text: str) -> dict[str, Any]:
    """`/api/show` `parameters`: one `name  value` line per value, values in Go `%#v` syntax.

    Repeated names (`stop`) become tuples.
    """
    out: dict[str, Any] = {}
    for line in text.splitlines():
        name, _, raw = line.strip().partition(" ")
        if not name:
            continue
        value = _go_value(raw.strip())
        if name in out:
            prev = out[name]
            out[name] = (prev if isinstance(prev, tuple) else (prev,)) + (value,)
        elif name == "stop":
            out[name] = (value,)
        else:
            out[name] = value
    return out


def _go_value(raw: str) -> Any:
    if raw.startswith('"'):
        try:
            return json.loads(raw)
        except ValueError:
            try:
                return ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                return raw[1:-1]
    if raw in ("true", "false"):
        return raw == "true"
    if _INT.match(raw):
        return int(raw)
    try:
        return float(raw)
    except ValueError:
        return raw


def _license(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return value or ""


def _digest(value: Any) -> Optional[str]:
    if not value:
        return None
    value = str(value).lower()
    return value if value.startswith("sha256:") else "sha256:" + value
