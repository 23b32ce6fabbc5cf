"""`stack lock`: pin pulled models to the manifest digest their registry serves now.

The digest of a reference is read with the registry's own API (`GET /v2/<namespace>/<model>/
manifests/<tag>`, the Docker Registry HTTP API v2 that Ollama's registry and `stack serve`
speak): the sha256 of the manifest bytes, which is what `/api/tags` lists once the model is
pulled. The stack file is rewritten with ruamel.yaml's round trip, so comments and key order
survive; only the `pull:` values change (`name` becomes `name@sha256:<digest>`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Optional

import httpx
from ruamel.yaml.comments import CommentedMap

from toolchain.errors import CorralError
from toolchain.names import parse_name
from toolchain.stack.load import StackError, WorkTree, load_text, parse_yaml, yaml_rt

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
MAX_MANIFEST = 4 << 20


def manifest_digest(ref: str, *, insecure: bool = False, timeout: float = 30.0) -> str:
    """`sha256:<hex>` of the manifest the registry serves for `ref` (a name, tag included)."""
    name = parse_name(ref).without_digest()
    scheme = "http" if insecure else (name.scheme or "https")
    url = f"{scheme}://{name.host}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"
    headers = {"Accept": MANIFEST_TYPES, "Accept-Encoding": "identity", "User-Agent": "corral-stack"}
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as http:
            response = http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise CorralError(f"{ref}: could not reach the registry at {scheme}://{name.host}: {exc}") from None
    if response.status_code == 404:
        raise CorralError(f"{ref}: the registry has no such model (manifest unknown)")
    if response.status_code >= 400:
        raise CorralError(f"{ref}: the registry answered {response.status_code} for the manifest")
    body = response.content
    if len(body) > MAX_MANIFEST:
        raise CorralError(f"{ref}: the registry's manifest is too large")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    claimed = response.headers.get("Docker-Content-Digest")
    if claimed and claimed.lower() != digest:
        raise CorralError(f"{ref}: the registry claims {claimed} but its manifest hashes to {digest}")
    return digest


@dataclass(frozen=True)
class Pinned:
    model: str
    before: str  # the pull value as it was
    after: str  # with the digest


def lock_file(stack_file: str | Path, *, update: bool = False, dry_run: bool = False) -> list[Pinned]:
    """Pin every unpinned `pull:` (every one with `update`); rewrite the file unless `dry_run`."""
    path = Path(stack_file)
    if not path.is_file():
        raise StackError(f"stack file {stack_file} not found")
    tree, rel = WorkTree.for_file(path)
    text = tree.read_text(rel)
    loaded = load_text(text, tree, rel, strict_env=False)  # validates; tokens are not needed here
    doc = parse_yaml(text, loaded.display)
    models = doc.get("models") if isinstance(doc, CommentedMap) else None
    changes: list[Pinned] = []
    for name, model in loaded.stack.models.items():
        if model.pull is None:
            continue
        raw = models[name]["pull"]
        if "${" in str(raw):
            raise loaded.error("cannot pin a reference that uses ${...}; write the reference out", "models", name, "pull")
        current = parse_name(model.pull)
        if current.digest and not update:
            continue
        plain = model.pull[: model.pull.rindex("@")] if current.digest else model.pull
        digest = manifest_digest(plain, insecure=model.insecure)
        after = f"{plain}@{digest}"
        if after != model.pull:
            models[name]["pull"] = after
            changes.append(Pinned(name, model.pull, after))
    if changes and not dry_run:
        out = StringIO()
        yaml = yaml_rt()
        yaml.indent(mapping=_indent(text), sequence=_indent(text) + 2, offset=_indent(text))
        yaml.dump(doc, out)
        path.write_text(out.getvalue(), encoding="utf-8")
    return changes


def _indent(text: str) -> int:
    """The file's mapping indent (2 unless its first indented line says otherwise)."""
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith("#") and len(stripped) < len(line):
            return len(line) - len(stripped)
    return 2


def check_pin(ref: str, pin: Optional[str], insecure: bool) -> None:
    """Before a pinned pull: refuse when the registry serves another digest under `ref`."""
    if not pin:
        return
    served = manifest_digest(ref, insecure=insecure)
    if served != pin:
        raise CorralError(
            f"the registry serves {served} for {ref}, but the stack pins {pin}; "
            "nothing was pulled (run `stack lock --update` to accept the registry's version)"
        )
