"""What the registry needs from the store, on top of `server.store.Store`.

Pull, push and the /v2/ routes reach the disk only through `RegistryStore`, which uses
the Store's API for everything that becomes visible: a blob enters the store only
through `Store.write_blob(..., expected=digest)` (hashed while written, renamed into
place only if it matches) and a manifest only through `Store.write_manifest` with the
bytes exactly as received (which also refuses a manifest whose blobs are missing).

The files the Store does not write, only names or tidies, are written here:

* ``blobs/sha256-<hex>-partial`` (`Store.partial_path`): an interrupted download, kept so
  the next attempt resumes it with ``Range`` (Ollama's name; the Store's listing and prune
  ignore it, its start-up `cleanup` removes it once untouched for an hour);
* ``blobs/.uploads/<session>``: the bytes of a push this server is receiving.

Two ways in for a finished file:

* `adopt_blob` (push sessions received from a client): the bytes are copied through
  `Store.write_blob`, which hashes exactly the bytes it writes, so a client still
  appending to its session cannot change a blob after it was checked;
* `adopt_download` (a pull's own ``-partial``, which only the one download task for
  that digest writes): hashed in place, then fsynced and renamed to its content
  address, which spares a multi-GB copy. The Store has no such primitive; this is the
  one place outside it that renames into ``blobs/``, and only after the hash matched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from server.errors import BlobNotFound, DigestMismatch, ModelNotFound
from server.manifest import digest_of
from server.registry.errors import RegistryError
from server.store import Store, fsync_dir
from toolchain.digests import file_digest
from toolchain.names import DEFAULT_HOST, Name

__all__ = ["RegistryStore"]


class RegistryStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root

    # -- blobs ----------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.store.blob_path(digest)

    def blob_size(self, digest: str) -> int | None:
        try:
            return self.store.blob_size(digest)
        except BlobNotFound:
            return None

    def partial_path(self, digest: str) -> Path:
        return self.store.partial_path(digest)

    def uploads_dir(self) -> Path:
        path = self.store.blobs_dir / ".uploads"
        path.mkdir(exist_ok=True)
        return path

    def adopt_blob(self, staged: Path, digest: str) -> None:
        """Store the file `staged` as blob `digest` if its bytes hash to it; `staged` is removed.

        Raises `DigestMismatch` (nothing stored) otherwise.
        """
        try:
            with staged.open("rb") as f:
                self.store.write_blob(f, expected=digest)
        finally:
            staged.unlink(missing_ok=True)

    def adopt_download(self, partial: Path, digest: str) -> None:
        """Make a finished download the blob `digest` if its bytes hash to it (DigestMismatch
        otherwise); `partial` is gone afterwards either way. Blocking: call in a thread."""
        target = self.store.blob_path(digest)
        try:
            actual = file_digest(partial)
            if actual != digest:
                raise DigestMismatch(digest, actual)
            if not target.is_file():
                with partial.open("rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(partial, 0o644)
                os.replace(partial, target)
                fsync_dir(target.parent)
        finally:
            partial.unlink(missing_ok=True)

    # -- manifests ------------------------------------------------------------------

    def read_manifest(self, name: Name) -> bytes | None:
        try:
            return self.store.read_manifest(name).raw
        except ModelNotFound:
            return None

    def write_manifest(self, name: Name, raw: bytes) -> None:
        """Write manifest bytes as received, under the name's lock (blocking: call in a thread)."""
        with self.store.lock(name):
            self.store.write_manifest(name, raw)

    def repository_manifests(self, namespace: str, model: str) -> Iterator[tuple[str, bytes]]:
        """(tag, bytes) of every local model ``namespace/model:*`` (default host), case-insensitively."""
        want = (DEFAULT_HOST, namespace.casefold(), model.casefold())
        for entry in self.store.list():
            n = entry.name
            if (n.host.casefold(), n.namespace.casefold(), n.model.casefold()) == want:
                yield n.tag, entry.manifest.raw

    def manifest_by_digest(self, namespace: str, model: str, digest: str) -> bytes | None:
        for _tag, raw in self.repository_manifests(namespace, model):
            if digest_of(raw) == digest:
                return raw
        return None


def mismatch(exc: DigestMismatch) -> RegistryError:
    """Ollama's pull wording for a blob whose bytes do not hash to its digest."""
    return RegistryError(f"digest mismatch, file must be downloaded again: want {exc.expected}, got {exc.got}")
