"""The parts of the registry protocol both sides share: media types, limits, manifest parsing.

A manifest is untrusted input on both sides (pulled from a remote registry, or pushed
to this server), so `parse_manifest` is stricter than the Store's reader (which also
accepts what Ollama itself writes or once wrote) and total: it bounds the size, the number of
descriptors and every field, and it accepts a digest only as ``sha256:`` + 64
lower-case hex, so no manifest field can ever become a path segment (CVE-2024-37032).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from server.store import MAX_MANIFEST_BYTES as STORE_MAX_MANIFEST_BYTES
from server.store import MEDIA_CONFIG, MEDIA_MANIFEST

__all__ = [
    "MANIFEST_MEDIA_TYPE",
    "CONFIG_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
    "MAX_ERROR_BODY_BYTES",
    "MAX_LAYERS",
    "Descriptor",
    "Manifest",
    "ManifestError",
    "digest_of",
    "is_blob_digest",
    "parse_manifest",
]

MANIFEST_MEDIA_TYPE = MEDIA_MANIFEST
CONFIG_MEDIA_TYPE = MEDIA_CONFIG

#: The OCI distribution spec asks registries to accept manifests of at least 4 MiB;
#: nothing larger is read, on either side (the Store's own limit).
MAX_MANIFEST_BYTES = STORE_MAX_MANIFEST_BYTES
#: Error and token bodies from a remote registry are read up to this many bytes.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: More layers than any model has; bounds the work a hostile manifest can cause.
MAX_LAYERS = 1024
#: 2 TiB: larger than any model file, small enough to rule out arithmetic surprises.
MAX_BLOB_SIZE = 2 << 40

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_/-]{0,254}")


class ManifestError(ValueError):
    """A manifest that is not a well-formed schemaVersion 2 manifest."""


def is_blob_digest(s: object) -> bool:
    """True for ``sha256:`` + 64 lower-case hex, the only digest form accepted on the wire."""
    return isinstance(s, str) and _DIGEST_RE.fullmatch(s) is not None


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @property
    def short(self) -> str:
        """The 12 hex digits Ollama shows in ``pulling <digest12>``."""
        return self.digest[7:19]


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def digest(self) -> str:
        return digest_of(self.raw)

    def blobs(self) -> list[Descriptor]:
        """Layers then config (Ollama's order), each digest once."""
        seen: set[str] = set()
        out: list[Descriptor] = []
        for d in (*self.layers, self.config):
            if d.digest not in seen:
                seen.add(d.digest)
                out.append(d)
        return out

    def total_size(self) -> int:
        return sum(d.size for d in self.blobs())


def _descriptor(obj: object, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestError(f"invalid manifest: {where} is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.fullmatch(media_type):
        raise ManifestError(f"invalid manifest: {where} has an invalid mediaType")
    if not is_blob_digest(digest):
        raise ManifestError(f"invalid manifest: {where} has an invalid digest {str(digest)[:100]!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB_SIZE:
        raise ManifestError(f"invalid manifest: {where} has an invalid size")
    return Descriptor(media_type, digest, size)


def _no_constants(name: str) -> object:
    raise ValueError(f"invalid JSON constant {name}")


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and validate manifest bytes; raises ManifestError naming the problem."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest too large: more than {MAX_MANIFEST_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"invalid manifest: not JSON ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise ManifestError("invalid manifest: not a JSON object")
    if obj.get("schemaVersion") != 2 or isinstance(obj.get("schemaVersion"), bool):
        raise ManifestError("invalid manifest: schemaVersion must be 2")
    media_type = obj.get("mediaType", MANIFEST_MEDIA_TYPE)
    if media_type != MANIFEST_MEDIA_TYPE:
        raise ManifestError(f"invalid manifest: unsupported mediaType {str(media_type)[:100]!r}")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("invalid manifest: layers must be a list")
    if len(layers) > MAX_LAYERS:
        raise ManifestError(f"invalid manifest: more than {MAX_LAYERS} layers")
    config = _descriptor(obj.get("config"), "config")
    return Manifest(raw, config, tuple(_descriptor(layer, f"layer {i}") for i, layer in enumerate(layers)))
