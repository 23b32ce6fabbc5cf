"""What the registry needs from the store, in one place.

Pull, push and the /v2/ routes reach the disk only through `RegistryStore`: blob paths
come only from a validated digest, manifest paths only from a valid name, and every
file that becomes visible is written to a temporary name, fsynced and renamed.

In-progress downloads live at ``blobs/sha256-<hex>-partial`` (Ollama's name, so a
half-finished pull can be resumed; nothing lists it as a blob); push sessions received
by this server live in ``blobs/.uploads/<session>``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

from server.registry.protocol import digest_of, is_blob_digest
from toolchain.names import DEFAULT_HOST, Name

__all__ = ["RegistryStore", "sha256_file"]


def sha256_file(path: Path) -> tuple[str, int]:
    """(digest, size) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RegistryStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- blobs ----------------------------------------------------------------------

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    def blob_path(self, digest: str) -> Path:
        if not is_blob_digest(digest):
            raise ValueError("invalid digest format")
        return self.blobs_dir / digest.replace(":", "-", 1)

    def blob_size(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def partial_path(self, digest: str) -> Path:
        path = self.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(path.name + "-partial")

    def uploads_dir(self) -> Path:
        path = self.blobs_dir / ".uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit_blob(self, staged: Path, digest: str) -> None:
        """Make a staged file, already verified to hash to `digest`, the blob `digest`."""
        target = self.blob_path(digest)
        with staged.open("rb+") as f:
            os.fsync(f.fileno())
        os.chmod(staged, 0o644)
        os.replace(staged, target)
        _fsync_dir(target.parent)

    # -- manifests ------------------------------------------------------------------

    def manifest_path(self, name: Name) -> Path:
        return self.root / "manifests" / name.filepath()

    def read_manifest(self, name: Name) -> bytes | None:
        path = self._existing_manifest_path(name)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _existing_manifest_path(self, name: Name) -> Path | None:
        """The manifest file for `name`, matching each part case-insensitively."""
        path = self.root / "manifests"
        for part in name.filepath().split("/"):
            if (path / part).exists():
                path = path / part
                continue
            try:
                match = [p for p in path.iterdir() if p.name.casefold() == part.casefold()]
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not match:
                return None
            path = match[0]
        return path if path.is_file() else None

    def write_manifest(self, name: Name, raw: bytes) -> None:
        """Write manifest bytes exactly as given (atomically), keeping existing casing."""
        path = self._existing_manifest_path(name) or self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{id(raw)}")
        try:
            with tmp.open("wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def repository_manifests(self, namespace: str, model: str, host: str = DEFAULT_HOST) -> Iterator[tuple[str, bytes]]:
        """(tag, bytes) of every manifest of `host/namespace/model`, matched case-insensitively."""
        probe = Name(host=host, namespace=namespace, model=model, tag="x")
        if not probe.is_valid():
            return
        base = self.root / "manifests"
        for part in (host, namespace, model):
            try:
                match = [p for p in base.iterdir() if p.name.casefold() == part.casefold() and p.is_dir()]
            except (FileNotFoundError, NotADirectoryError):
                return
            if not match:
                return
            base = match[0]
        for path in sorted(base.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                yield path.name, path.read_bytes()

    def manifest_by_digest(self, namespace: str, model: str, digest: str) -> bytes | None:
        for _tag, raw in self.repository_manifests(namespace, model):
            if digest_of(raw) == digest:
                return raw
        return None
