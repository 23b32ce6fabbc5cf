"""Content digests as Ollama names blobs and manifests: ``sha256:`` + 64 lower-case hex."""

from __future__ import annotations

import hashlib
import os

__all__ = ["digest_of", "file_digest"]

_CHUNK = 1 << 20


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """The digest of a file's bytes, read in 1 MiB chunks (model files are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
