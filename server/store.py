"""The model store under `OLLAMA_MODELS`, laid out exactly as Ollama lays it out.

    blobs/sha256-<64 hex>                        content-addressed layers and config blobs
    manifests/<host>/<namespace>/<model>/<tag>   schemaVersion 2 manifests (Docker v2 JSON)

The only code that touches the store's files. The manifest model and its validation live in
`server.manifest`; the store reads manifests with its lenient `parse`. The store's guarantees:

* Paths are derived, never accepted: a blob path comes only from a digest that matched
  `sha256:<64 hex>` (`normalize_digest`), a manifest path only from a valid `Name`; both are checked
  again for containment under the store root.
* Nothing becomes visible before it is complete: every write goes to a temp file in the target's
  directory, is fsynced, renamed into place and the directory fsynced. A blob is hashed while it is
  written and only renamed to its content address when the hash matches. A crash leaves at most a
  `.tmp-*` file, which no reader looks at and `cleanup()` removes.
* Mutations are serialised: one lock per manifest name (case-insensitive) for whole operations, and
  a store lock around every manifest write/delete and every prune, so a prune never removes a blob
  that a manifest (or an operation in progress, see `pin`) is about to reference. The store lock is
  also an `flock` on `.corral-store.lock`, so two servers sharing one store serialise too (pins and
  name locks are per process).
* Blobs a deleted or replaced manifest no longer shares with any other manifest are pruned unless
  the store was opened with `noprune` (`OLLAMA_NOPRUNE`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Iterable, Iterator

from server import gguf_info
from server.errors import (
    BadRequest,
    BlobNotFound,
    DigestMismatch,
    InvalidModel,
    InvalidName,
    MissingBlob,
    ModelNotFound,
    ServerError,
)
from server.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, normalize_digest, parse
from toolchain.digests import file_digest
from toolchain.names import Name

TMP_PREFIX = ".tmp-"
PRUNE_GRACE_SECONDS = 3600.0

_BLOB_FILE = re.compile(r"sha256-([0-9a-f]{64})")
#: An interrupted download: ours (`-partial`, see `partial_path`) or Ollama's part states (`-partial-<n>`).
_PARTIAL_FILE = re.compile(r"sha256-[0-9a-fA-F]{64}-partial(-\d+)?")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlobResult:
    digest: str
    size: int
    created: bool  # False when the blob already existed


@dataclass
class Entry:
    """One model in the store: its name (casing as on disk) and manifest."""

    name: Name
    manifest: Manifest


class Store:
    """The blobs and manifests under `root` (Ollama's `OLLAMA_MODELS`)."""

    def __init__(self, root: str | Path, *, noprune: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"
        self.noprune = noprune
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self._store_lock = _StoreLock(self.root / ".corral-store.lock")
        self._name_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._name_locks_guard = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._gguf_cache: OrderedDict[str, gguf_info.GGUFInfo] = OrderedDict()

    # -- paths -----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """The file of a blob; `digest` is validated first (InvalidDigest)."""
        hexdigest = normalize_digest(digest)[len("sha256:") :]
        return self._contained(self.blobs_dir / f"sha256-{hexdigest}", self.blobs_dir)

    def manifest_path(self, name: Name) -> Path:
        """The manifest file of a valid name (InvalidName otherwise)."""
        if not name.is_valid():
            raise InvalidName()
        return self._contained(
            self.manifests_dir / name.host / name.namespace / name.model / name.tag, self.manifests_dir
        )

    @staticmethod
    def _contained(path: Path, base: Path) -> Path:
        """`path` if it stays inside `base` and is absent or a regular file: a FIFO, device, socket
        or directory planted where a blob or manifest belongs would block or fail whoever opens it."""
        resolved = path.resolve()
        if not resolved.is_relative_to(base.resolve()) or resolved == base.resolve():
            raise BadRequest("path escapes the model store")
        try:
            mode = os.stat(resolved).st_mode
        except OSError:
            return path  # absent: the caller's open or write says what that means
        if not stat.S_ISREG(mode):
            raise BadRequest("path is not a regular file in the model store")
        return path

    def disk_space(self) -> tuple[int, int]:
        """(free, total) bytes of the filesystem that holds the store, free as the server (not
        root) may use it: what `stack doctor` checks before a pull or create runs out of room."""
        usage = shutil.disk_usage(self.root)
        return usage.free, usage.total

    # -- blobs -----------------------------------------------------------------------------

    def partial_path(self, digest: str) -> Path:
        """Where a download of blob `digest` collects its bytes until they hashed to it."""
        path = self.blob_path(digest)
        return path.with_name(path.name + "-partial")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def read_blob(self, digest: str, limit: int = 64 << 20) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BadRequest(f"blob {digest} is larger than {limit} bytes")
        return data

    def write_blob(self, chunks: Iterable[bytes] | IO[bytes], expected: str | None = None) -> BlobResult:
        """Store the bytes from `chunks` (an iterable of bytes or a binary file).

        The bytes are hashed as they are written to a temp file; if `expected` is given and differs,
        `DigestMismatch` is raised and nothing is kept. Only a complete, verified, fsynced file is
        renamed to `blobs/sha256-<hex>`. An existing blob is kept (its mtime refreshed).
        """
        if expected is not None:
            expected = normalize_digest(expected)
        try:
            return self._write_blob(_iter_chunks(chunks), expected)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ServerError("no space left on device for the model store", 507) from None
            raise

    def _write_blob(self, source: Iterator[bytes], expected: str | None) -> BlobResult:
        h = hashlib.sha256()
        size = 0
        with self._temp_file(self.blobs_dir) as (tmp_path, f):
            for chunk in source:
                if chunk:
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            digest = "sha256:" + h.hexdigest()
            if expected is not None and digest != expected:
                raise DigestMismatch(expected, digest)
            final = self.blob_path(digest)
            if final.is_file():
                _touch(final)
                return BlobResult(digest, size, False)
            _fsync_file(f)
            os.chmod(tmp_path, 0o644)
            os.replace(tmp_path, final)
            fsync_dir(self.blobs_dir)
        return BlobResult(digest, size, True)

    def put_bytes(self, data: bytes) -> BlobResult:
        return self.write_blob([data])

    def gguf(self, digest: str, *, verbose: bool = False) -> gguf_info.GGUFInfo:
        """The GGUF header of a model blob (cached per digest; blobs never change).

        Raises `InvalidModel` naming the problem when the blob is not a usable GGUF file.
        """
        digest = normalize_digest(digest)
        if not verbose and digest in self._gguf_cache:
            self._gguf_cache.move_to_end(digest)
            return self._gguf_cache[digest]
        with self.open_blob(digest) as f:
            try:
                info = gguf_info.read(f, max_array=-1 if verbose else 0)
            except gguf_info.GGUFError as exc:
                raise InvalidModel(str(exc)) from None
        if not verbose:
            self._gguf_cache[digest] = info
            while len(self._gguf_cache) > 64:
                self._gguf_cache.popitem(last=False)
        return info

    # -- names and manifests --------------------------------------------------------------

    def resolve(self, name: Name) -> Name:
        """`name` with each part spelled as it already is on disk (case-insensitive match, level
        by level), so a model is never stored twice under names differing only by case."""
        if not name.is_valid():
            raise InvalidName()
        parts = [name.host, name.namespace, name.model, name.tag]
        directory = self.manifests_dir
        for i, part in enumerate(parts):
            match = _find_casefold(directory, part, want_dir=i < 3)
            if match is None:
                break
            parts[i] = match
            directory = directory / match
        return Name(
            scheme=name.scheme, host=parts[0], namespace=parts[1], model=parts[2], tag=parts[3], digest=name.digest
        )

    def read_manifest(self, name: Name) -> Manifest:
        """The manifest of `name` (resolved case-insensitively). ModelNotFound if absent.

        A name pinned with `@sha256:<hex>` only matches a manifest with that digest.
        """
        path = self.manifest_path(self.resolve(name))
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
                mtime = os.fstat(f.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ModelNotFound(f"model '{name.display_shortest()}' not found") from None
        try:
            manifest = dataclasses.replace(parse(raw), mtime=mtime)
        except ManifestError as exc:
            raise ServerError(f"model {name.display_shortest()}: {exc}") from None
        if name.digest and "sha256:" + manifest.digest != name.digest:
            raise ModelNotFound(f"model '{name.display_shortest()}@{name.digest}' not found")
        return manifest

    def exists(self, name: Name) -> bool:
        try:
            self.read_manifest(name)
        except ModelNotFound:
            return False
        return True

    def write_manifest(self, name: Name, manifest: Manifest | bytes) -> Manifest:
        """Atomically write `manifest` (a Manifest, encoded like Ollama, or raw bytes kept verbatim,
        as a pull stores the registry's bytes) for `name`, replacing any previous one.

        Every blob it references must already be in the store (MissingBlob otherwise); the
        replaced manifest's blobs that nothing references any more are pruned (unless noprune).
        """
        raw = manifest if isinstance(manifest, bytes) else manifest.encode()
        try:
            parsed = parse(raw)
        except ManifestError as exc:
            raise BadRequest(str(exc)) from None
        name = self.resolve(name)
        path = self.manifest_path(name)
        with self._store_lock:
            for d in parsed.blobs():
                if not self.blob_path(d.digest).is_file():
                    raise MissingBlob(d.digest, "manifest references blob")
            old = self._read_quiet(path)
            self._make_dirs(path.parent)
            with self._temp_file(path.parent) as (tmp_path, f):
                f.write(raw)
                _fsync_file(f)
                os.chmod(tmp_path, 0o644)
                os.replace(tmp_path, path)
                fsync_dir(path.parent)
            if old is not None:
                self._prune_layers(old)
        return dataclasses.replace(parsed, mtime=path.stat().st_mtime)

    def list(self) -> list[Entry]:
        """Every readable model (corrupt manifests and stray files are skipped, as in Ollama)."""
        entries = []
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith(TMP_PREFIX):
                continue
            host, namespace, model, tag = path.relative_to(self.manifests_dir).parts
            name = Name(scheme="https", host=host, namespace=namespace, model=model, tag=tag)
            if not name.is_valid():
                continue
            try:
                entries.append(Entry(name, self.read_manifest(name)))
            except ServerError:
                continue
        return entries

    def copy(self, src: Name, dst: Name) -> Manifest:
        """Copy `src`'s manifest bytes to `dst` (blobs are shared). ModelNotFound if src is absent."""
        src, dst = self.resolve(src), self.resolve(dst)
        with self.lock(dst), self._store_lock:  # no prune between reading src and writing dst
            manifest = self.read_manifest(src)
            if self.manifest_path(src) == self.manifest_path(dst):
                return manifest
            return self.write_manifest(dst, manifest.raw)

    def delete(self, name: Name) -> Manifest:
        """Remove `name`'s manifest, empty directories, and its blobs nothing else references."""
        name = self.resolve(name)
        with self.lock(name), self._store_lock:
            manifest = self.read_manifest(name)
            path = self.manifest_path(name)
            path.unlink()
            fsync_dir(path.parent)
            self._prune_dirs(path.parent)
            self._prune_layers(manifest)
        return manifest

    def verify(self, *, hash_blobs: bool = True) -> list[str]:
        """Check the store's invariants; returns one line per problem (empty when sound): every
        manifest parses, every blob it references exists, and every blob hashes to its name."""
        problems = []
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith(TMP_PREFIX):
                continue
            rel = path.relative_to(self.manifests_dir)
            try:
                manifest = parse(path.read_bytes())
            except (OSError, ManifestError) as exc:
                problems.append(f"manifest {rel}: {exc}")
                continue
            for d in manifest.blobs():
                try:
                    present = self.blob_path(d.digest).is_file()
                except ServerError as exc:  # a link out of the store, a directory, a FIFO...
                    problems.append(f"manifest {rel}: blob {d.digest}: {exc.message}")
                    continue
                if not present:
                    problems.append(f"manifest {rel}: missing blob {d.digest}")
        if hash_blobs:
            for path in sorted(self.blobs_dir.iterdir()):
                m = _BLOB_FILE.fullmatch(path.name)
                if m is None or path.is_symlink() or not path.is_file():
                    continue  # a link is never read (a manifest naming it is reported above)
                actual = file_digest(path)
                if actual != "sha256:" + m.group(1):
                    problems.append(f"blob {path.name}: content hashes to {actual}")
        return problems

    # -- locking ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: Name) -> Iterator[None]:
        """Exclusive lock for one model name (case-insensitive), for a whole create/copy/delete."""
        key = name.casefold_key()
        with self._name_locks_guard:
            lock = self._name_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    @contextlib.contextmanager
    def pin(self, digests: Iterable[str]) -> Iterator[None]:
        """Keep `digests` from being pruned while an operation that will reference them runs."""
        pinned = [normalize_digest(d) for d in digests]
        with self._store_lock:
            self._pins.update(pinned)
        try:
            yield
        finally:
            with self._store_lock:
                self._pins.subtract(pinned)
                self._pins += Counter()  # drop zero counts

    # -- pruning ------------------------------------------------------------------------------

    def referenced(self) -> set[str] | None:
        """Digests referenced by any manifest or pin; None if some manifest cannot be parsed (then
        nothing may be pruned: its blobs are unknown)."""
        refs = set(self._pins)
        for path in self.manifests_dir.glob("*/*/*/*"):
            if not path.is_file() or path.name.startswith(TMP_PREFIX):
                continue
            try:
                refs.update(d.digest for d in parse(path.read_bytes()).blobs())
            except (OSError, ManifestError):
                return None
        return refs

    def _prune_layers(self, manifest: Manifest) -> None:
        if self.noprune:
            return
        with self._store_lock:
            refs = self.referenced()
            if refs is None:
                return
            for d in manifest.blobs():
                if d.digest not in refs:
                    with contextlib.suppress(FileNotFoundError, BadRequest):  # gone, or not ours to remove
                        self.blob_path(d.digest).unlink()

    def prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> list[str]:
        """Startup GC (unless noprune): delete unreferenced blobs older than the grace period and
        empty manifest directories. Skipped entirely if any manifest is corrupt. Returns digests."""
        removed: list[str] = []
        if self.noprune:
            return removed
        with self._store_lock:
            refs = self.referenced()
            if refs is None:
                return removed
            now = time.time()
            for path in self.blobs_dir.iterdir():
                m = _BLOB_FILE.fullmatch(path.name)
                if m is None or not path.is_file():
                    continue
                digest = "sha256:" + m.group(1)
                if digest in refs or now - path.stat().st_mtime < grace_seconds:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(digest)
            for directory in sorted(self.manifests_dir.glob("*/*/*"), reverse=True):
                self._prune_dirs(directory)
        return removed

    def cleanup(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> list[Path]:
        """Start-up tidying: remove temp files left by a crash and interrupted downloads
        (`-partial`), each only when untouched for the grace period. Nothing reads either.

        Younger ones are kept: a temp file or a partial may be a write in progress on another
        server sharing this store (a download writes at least once per read timeout, 60 s, or
        gives up), and a partial left by a recent crash is resumed by the next pull of its blob.
        """
        removed = []
        now = time.time()
        candidates = [*self.blobs_dir.glob(TMP_PREFIX + "*"), *self.manifests_dir.glob("*/*/*/" + TMP_PREFIX + "*")]
        candidates += [p for p in self.blobs_dir.glob("sha256-*-partial*") if is_partial_download(p.name)]
        for path in candidates:
            with contextlib.suppress(FileNotFoundError):
                if path.is_symlink() or not path.is_file():
                    continue  # never made by the store (an operator's, fsck reports it)
                if now - path.lstat().st_mtime >= grace_seconds:
                    path.unlink()
                    removed.append(path)
        return removed

    def _prune_dirs(self, directory: Path) -> None:
        """Remove empty directories from `directory` up to (not including) manifests/."""
        base = self.manifests_dir.resolve()
        while directory.resolve() != base and directory.resolve().is_relative_to(base):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # -- helpers -------------------------------------------------------------------------------

    def _make_dirs(self, directory: Path) -> None:
        """Create the manifest directories down to `directory`, each new entry fsynced into its
        parent so a crash cannot lose a directory whose manifest was already reported written."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            fsync_dir(d.parent)

    @staticmethod
    def _read_quiet(path: Path) -> Manifest | None:
        try:
            return parse(path.read_bytes())
        except (OSError, ManifestError):
            return None

    @contextlib.contextmanager
    def _temp_file(self, directory: Path) -> Iterator[tuple[str, BinaryIO]]:
        """A new temp file in `directory`; removed on exit unless it was renamed away."""
        tmp_path = str(directory / f"{TMP_PREFIX}{secrets.token_hex(8)}")
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                yield tmp_path, f
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)


class _StoreLock:
    """A re-entrant thread lock that also holds an exclusive `flock` on `path` while held."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        self._path = path
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> "_StoreLock":
        self._lock.acquire()
        if self._depth == 0:
            try:
                import fcntl

                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except (ImportError, OSError):
                self._close()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._close()
        self._lock.release()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def is_partial_download(filename: str) -> bool:
    """A file name in blobs/ of an interrupted download (`cleanup` removes stale ones)."""
    return _PARTIAL_FILE.fullmatch(filename) is not None


def _iter_chunks(source: Iterable[bytes] | IO[bytes]) -> Iterator[bytes]:
    if hasattr(source, "read"):
        while True:
            chunk = source.read(_CHUNK)  # type: ignore[union-attr]
            if not chunk:
                return
            yield chunk
    else:
        yield from source  # type: ignore[misc]


def _find_casefold(directory: Path, part: str, *, want_dir: bool) -> str | None:
    """The entry of `directory` equal to `part` ignoring case (exact spelling preferred)."""
    exact = directory / part
    if (exact.is_dir() if want_dir else exact.is_file()):
        return part
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None
    folded = part.casefold()
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.casefold() == folded and (entry.is_dir() if want_dir else entry.is_file()):
            return entry.name
    return None


def _fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename or an unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)
