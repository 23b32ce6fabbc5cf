"""The model manifest: Ollama's schemaVersion 2 (Docker v2) JSON, its media types and its digests.

One parser, `parse`, serves the store and the registry. It is total: it bounds the size, and
any malformed input raises `ManifestError` naming the problem (never another exception). Two
strictnesses:

* ``parse(raw)`` reads what a store holds: whatever Ollama writes or once wrote (no or another
  top-level mediaType, any schemaVersion, no config, ``sha256-`` or upper-case digests, which
  are normalised to ``sha256:<lower hex>``);
* ``parse(raw, strict=True)`` reads bytes that cross a network (a pull, a push received or
  about to be sent): schemaVersion 2, the Docker manifest media type, a config and a list of at
  most `MAX_LAYERS` layers, plain media types, and a digest only as ``sha256:`` + 64 lower-case
  hex, so no field can become a path segment other than the one it names (CVE-2024-37032).

Either way a digest reaches a path only through `normalize_digest`'s 64 hex digits.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from server import gojson
from server.errors import InvalidDigest
from toolchain.digests import digest_of

__all__ = [
    "MEDIA_MANIFEST",
    "MEDIA_CONFIG",
    "MEDIA_MODEL",
    "MEDIA_ADAPTER",
    "MEDIA_PROJECTOR",
    "MEDIA_TEMPLATE",
    "MEDIA_PROMPT",
    "MEDIA_SYSTEM",
    "MEDIA_PARAMS",
    "MEDIA_LICENSE",
    "MEDIA_MESSAGES",
    "MAX_MANIFEST_BYTES",
    "MAX_LAYERS",
    "MAX_BLOB_SIZE",
    "TOO_LARGE",
    "Layer",
    "Manifest",
    "ManifestError",
    "digest_of",
    "is_blob_digest",
    "normalize_digest",
    "parse",
]

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"  # legacy name of .template
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"

#: The OCI distribution spec asks registries to accept manifests of at least 4 MiB; nothing
#: larger is read, from the disk or from a network.
MAX_MANIFEST_BYTES = 4 << 20
TOO_LARGE = f"manifest too large: more than {MAX_MANIFEST_BYTES} bytes"
#: More layers than any model has; bounds the work a hostile manifest can cause (strict).
MAX_LAYERS = 1024
#: 2 TiB: larger than any model file, small enough to rule out arithmetic surprises.
MAX_BLOB_SIZE = 2 << 40

_ANY_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_WIRE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_/-]{0,254}")


class ManifestError(ValueError):
    """Bytes that are not a manifest (the message names the problem)."""


def normalize_digest(digest: str) -> str:
    """`sha256:<hex>` or `sha256-<hex>` (64 hex digits, any case) → `sha256:<lower hex>`.

    Anything else raises `InvalidDigest` ("invalid digest format"), before any path is built.
    """
    m = _ANY_DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if m is None:
        raise InvalidDigest()
    return "sha256:" + m.group(1).lower()


def is_blob_digest(s: object) -> bool:
    """True for ``sha256:`` + 64 lower-case hex, the only digest form accepted on the wire."""
    return isinstance(s, str) and _WIRE_DIGEST.fullmatch(s) is not None


@dataclass(frozen=True)
class Layer:
    """A manifest descriptor: the config or a layer."""

    media_type: str
    digest: str
    size: int
    from_: str = ""
    name: str = ""

    @property
    def short(self) -> str:
        """The 12 hex digits Ollama shows in ``pulling <digest12>``."""
        return self.digest[7:19]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            d["from"] = self.from_
        if self.name:
            d["name"] = self.name
        return d


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest. `raw` is its bytes (kept verbatim), `digest` their sha256 hex, the
    model ID `ollama list` shows; `mtime` is the manifest file's, when read from a store."""

    config: Layer
    layers: list[Layer]
    schema_version: int = 2
    media_type: str = MEDIA_MANIFEST
    raw: bytes = b""
    mtime: float = 0.0

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def encode(self) -> bytes:
        """The manifest as Ollama writes it (Go encoder, field order, trailing newline)."""
        return gojson.encode(
            {
                "schemaVersion": self.schema_version,
                "mediaType": self.media_type,
                "config": self.config.to_json(),
                "layers": [layer.to_json() for layer in self.layers],
            }
        )

    def blobs(self) -> list[Layer]:
        """The blobs it references: layers then config (Ollama's order), each digest once."""
        seen: set[str] = set()
        out: list[Layer] = []
        for d in (*self.layers, self.config):
            if d.digest and d.digest not in seen:
                seen.add(d.digest)
                out.append(d)
        return out

    def size(self) -> int:
        """Ollama's model size: every layer's and the config's, as listed."""
        return sum(d.size for d in (*self.layers, self.config))


def parse(raw: bytes, *, strict: bool = False) -> Manifest:
    """Parse and validate manifest bytes (see the module's docstring for `strict`)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(TOO_LARGE)
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"invalid manifest: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise ManifestError("invalid manifest: not a JSON object")
    schema, media_type = obj.get("schemaVersion", 2), obj.get("mediaType", MEDIA_MANIFEST)
    layers, config = obj.get("layers"), obj.get("config")
    if strict and (schema != 2 or isinstance(schema, bool)):
        raise ManifestError("invalid manifest: schemaVersion must be 2")
    if strict and media_type != MEDIA_MANIFEST:
        raise ManifestError(f"invalid manifest: unsupported mediaType {str(media_type)[:100]!r}")
    if layers is None and not strict:
        layers = []
    if not isinstance(layers, list):
        raise ManifestError("invalid manifest: layers must be a list")
    if strict and len(layers) > MAX_LAYERS:
        raise ManifestError(f"invalid manifest: more than {MAX_LAYERS} layers")
    return Manifest(
        config=_layer(config, "config", strict) if strict or config else Layer(MEDIA_CONFIG, "", 0),
        layers=[_layer(item, f"layer {i}", strict) for i, item in enumerate(layers)],
        schema_version=schema if isinstance(schema, int) and not isinstance(schema, bool) else 2,
        media_type=media_type if isinstance(media_type, str) else MEDIA_MANIFEST,
        raw=raw,
    )


def _layer(obj: object, where: str, strict: bool) -> Layer:
    if not isinstance(obj, dict):
        raise ManifestError(f"invalid manifest: {where} is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or (strict and not _MEDIA_TYPE.fullmatch(media_type)):
        raise ManifestError(f"invalid manifest: {where} has an invalid mediaType")
    if strict and not is_blob_digest(digest):
        raise ManifestError(f"invalid manifest: {where} has an invalid digest {str(digest)[:100]!r}")
    try:
        digest = normalize_digest(digest)  # type: ignore[arg-type]
    except InvalidDigest:
        raise ManifestError(f"invalid manifest: {where} has an invalid digest {str(digest)[:100]!r}") from None
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB_SIZE:
        raise ManifestError(f"invalid manifest: {where} has an invalid size")
    from_, name = obj.get("from", ""), obj.get("name", "")
    return Layer(media_type, digest, size, from_ if isinstance(from_, str) else "", name if isinstance(name, str) else "")


def _no_constants(name: str) -> object:
    raise ValueError(f"invalid JSON constant {name}")
