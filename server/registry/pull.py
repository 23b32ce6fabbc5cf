"""Pull a model from a registry into the store (`POST /api/pull`).

The flow and the progress messages follow Ollama (`pulling manifest`, `pulling <hex12>`
with total/completed, `verifying sha256 digest`, `writing manifest`, `success`); the
guarantees are stricter:

* the manifest is read up to `MAX_MANIFEST_BYTES` and validated before any path is
  derived from it; pulled by digest (``name@sha256:...``) its bytes must hash to that
  digest;
* only blobs not in the store are downloaded; each goes to ``sha256-<hex>-partial``, is
  resumed with ``Range`` after a cut connection (within this pull, and by the next pull
  of the same blob), must have exactly the manifest's size, and is hashed *before* it is
  renamed to its content address — nothing unverified is ever visible;
* the manifest is written last, byte for byte as received, so a failure at any step
  leaves the model absent and the store as it was (a `-partial` file at most);
* two pulls that need the same blob at the same time share one download.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import httpx

from server import observe
from server.errors import DigestMismatch, ServerError
from server.manifest import (
    MAX_MANIFEST_BYTES,
    MEDIA_MANIFEST,
    TOO_LARGE,
    Layer,
    Manifest,
    ManifestError,
    digest_of,
    parse,
)
from server.registry.client import Remote, read_limited
from server.registry.credentials import Credentials
from server.registry.errors import NOT_FOUND, RegistryError
from server.registry.storage import RegistryStore, mismatch
from toolchain.names import Name

__all__ = ["pull", "fetch_manifest", "PROGRESS_INTERVAL", "MAX_ATTEMPTS"]

#: Seconds between progress messages while a blob downloads (Ollama: 60 ms).
PROGRESS_INTERVAL = 0.1
#: Connection attempts per blob (and for the manifest) before a pull gives up.
MAX_ATTEMPTS = 5
_CHUNK = 1 << 16
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

RemoteFactory = Callable[[], Remote]


def _backoff(attempt: int) -> float:
    return min(0.2 * 2**attempt, 3.0)


async def fetch_manifest(remote: Remote, name: Name) -> Manifest:
    """GET the manifest for the name's tag (or digest pin) and validate it."""
    reference = name.digest or name.tag
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with remote.stream(
                "GET", f"{remote.repo}/manifests/{reference}", headers={"Accept": MEDIA_MANIFEST}
            ) as response:
                if response.status_code != 200:
                    error = await remote.fail(response)
                    if response.status_code >= 500 and attempt + 1 < MAX_ATTEMPTS:
                        await asyncio.sleep(_backoff(attempt))
                        continue
                    raise error
                raw = await read_limited(response, MAX_MANIFEST_BYTES)
                announced = response.headers.get("docker-content-digest", "")
            break
        except httpx.TransportError as exc:
            # A refused connection or a failed TLS handshake will not heal in seconds: fail now.
            if attempt + 1 >= MAX_ATTEMPTS or isinstance(exc, httpx.ConnectError):
                raise RegistryError(f"{exc.__class__.__name__}: {exc}".rstrip(": "), 502) from None
            await asyncio.sleep(_backoff(attempt))
    if raw is None:
        raise RegistryError(TOO_LARGE)
    actual = digest_of(raw)
    if name.digest and actual != name.digest:
        raise RegistryError(f"manifest digest mismatch: want {name.digest}, got {actual}")
    if announced and announced.startswith("sha256:") and announced != actual:
        raise RegistryError(f"manifest digest mismatch: registry announced {announced[:80]}, got {actual}")
    try:
        return parse(raw, strict=True)
    except ManifestError as exc:
        raise RegistryError(str(exc)) from None


# -- one download per blob ------------------------------------------------------------


@dataclass
class _Download:
    desc: Layer
    completed: int = 0
    waiters: int = 0
    task: asyncio.Task | None = field(default=None, repr=False)


_downloads: dict[tuple[str, str], _Download] = {}


def _progress(desc: Layer, completed: int) -> dict:
    return {"status": f"pulling {desc.short}", "digest": desc.digest, "total": desc.size, "completed": completed}


async def _download(store: RegistryStore, desc: Layer, remote_factory: RemoteFactory) -> AsyncIterator[dict]:
    """Download one blob (or join the download already running) and report its progress."""
    key = (str(store.root), desc.digest)
    dl = _downloads.get(key)
    if dl is None or dl.task is None or dl.task.done():
        dl = _Download(desc)
        dl.task = asyncio.create_task(_fetch_blob(store, dl, remote_factory))
        _downloads[key] = dl
        dl.task.add_done_callback(lambda _t, key=key, dl=dl: _downloads.get(key) is dl and _downloads.pop(key))
    dl.waiters += 1
    try:
        yield _progress(desc, dl.completed)
        while True:
            done, _ = await asyncio.wait({dl.task}, timeout=PROGRESS_INTERVAL)
            if done:
                break
            yield _progress(desc, dl.completed)
        dl.task.result()
        yield _progress(desc, desc.size)
    finally:
        dl.waiters -= 1
        if dl.waiters == 0 and not dl.task.done():
            dl.task.cancel()  # nobody waits any more; the -partial file stays for a resume


async def _fetch_blob(store: RegistryStore, dl: _Download, remote_factory: RemoteFactory) -> None:
    desc = dl.desc
    partial = store.partial_path(desc.digest)
    try:
        partial.touch()  # exists even for a zero-byte blob, which needs no request at all
        async with remote_factory() as remote:
            await _fetch_into(remote, partial, dl)
        try:  # hashed, then renamed to its content address only if it matches
            await asyncio.to_thread(store.adopt_download, partial, desc.digest)
        except DigestMismatch as exc:
            raise mismatch(exc) from None
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            partial.unlink(missing_ok=True)
            raise RegistryError(f"no space left on device while writing {desc.digest}", 507) from None
        raise


async def _fetch_into(remote: Remote, partial: Path, dl: _Download) -> None:
    """Fill `partial` with the blob's bytes, resuming with Range after a cut connection.

    A connection that breaks is retried from where it broke; MAX_ATTEMPTS attempts in a
    row without a new byte (or 5xx answers) end the download, keeping `partial`.
    """
    desc = dl.desc
    url = f"{remote.repo}/blobs/{desc.digest}"
    attempt = 0
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > desc.size:
            partial.unlink()
            offset = 0
        if offset == desc.size:
            return
        dl.completed = offset
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with remote.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status not in (200, 206):
                    if status == 404:
                        raise RegistryError(f"{NOT_FOUND}: blob {desc.digest}", 404)
                    error = await remote.fail(response)
                    if status == 416:
                        partial.unlink(missing_ok=True)  # not a prefix of what the registry has
                        raise RegistryError(f"registry refused to resume {desc.digest}: {error.message}")
                    if status < 500 or attempt + 1 >= MAX_ATTEMPTS:
                        raise error
                    attempt += 1
                    await asyncio.sleep(_backoff(attempt))
                    continue
                if status == 206 and _range_start(response) != offset:
                    raise RegistryError(f"registry answered a range request for {desc.digest} with the wrong range")
                position = offset if status == 206 else 0  # a 200 ignores the Range: start over
                with partial.open("ab" if status == 206 else "wb") as f:
                    async for chunk in response.aiter_raw(_CHUNK):
                        position += len(chunk)
                        if position > desc.size:
                            f.close()
                            partial.unlink(missing_ok=True)
                            raise RegistryError(
                                f"blob {desc.digest} is larger than the {desc.size} bytes its manifest declares"
                            )
                        f.write(chunk)
                        observe.count_bytes("pulled", len(chunk))
                        dl.completed = position
                if position < desc.size:  # the body ended cleanly but short: not the declared blob
                    partial.unlink(missing_ok=True)
                    raise RegistryError(
                        f"blob {desc.digest} is smaller than the {desc.size} bytes its manifest declares"
                    )
                return
        except httpx.TransportError as exc:
            progressed = partial.exists() and partial.stat().st_size > offset
            attempt = 1 if progressed else attempt + 1
            if attempt >= MAX_ATTEMPTS:
                raise RegistryError(
                    f"download of {desc.digest} failed after {MAX_ATTEMPTS} attempts without progress: "
                    f"{exc.__class__.__name__} {exc}".strip()
                ) from None
            await asyncio.sleep(_backoff(attempt))


def _range_start(response: httpx.Response) -> int:
    value = response.headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    first = rest.split("-", 1)[0]
    if unit.strip() != "bytes" or not first.isdigit():
        raise RegistryError("registry answered a range request without a valid Content-Range")
    return int(first)


# -- the whole pull ---------------------------------------------------------------------


async def pull(
    store: RegistryStore,
    name: Name,
    *,
    insecure: bool = False,
    credentials: Credentials | None = None,
) -> AsyncIterator[dict]:
    """Yield Ollama's progress messages; raises RegistryError (message, status) on failure."""

    learned: list[str | None] = [None]  # the Authorization the manifest request ended up with

    def remote_factory() -> Remote:
        remote = Remote(name, insecure=insecure, credentials=credentials)
        remote.authorization = learned[0] or remote.authorization
        return remote

    yield {"status": "pulling manifest"}
    async with remote_factory() as remote:
        try:
            manifest = await fetch_manifest(remote, name)
        except RegistryError as exc:
            raise exc.prefixed("pull model manifest") from None
        learned[0] = remote.authorization

    # Pinned: a concurrent delete's prune must not remove blobs this pull is about to reference.
    with store.store.pin(d.digest for d in manifest.blobs()):
        async for message in _pull_blobs(store, name, manifest, remote_factory):
            yield message


async def _pull_blobs(
    store: RegistryStore, name: Name, manifest: Manifest, remote_factory: RemoteFactory
) -> AsyncIterator[dict]:
    for desc in manifest.blobs():
        size = store.blob_size(desc.digest)
        if size is not None:
            if size != desc.size:
                raise RegistryError(
                    f"manifest declares {desc.size} bytes for {desc.digest}, the stored blob has {size}"
                )
            yield _progress(desc, desc.size)
            continue
        async for message in _download(store, desc, remote_factory):
            yield message

    # Every blob was hashed before it became visible (above); the message keeps Ollama's sequence.
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    previous = store.read_manifest(name.without_digest())
    try:  # the Store prunes the replaced manifest's blobs nothing else uses (unless OLLAMA_NOPRUNE)
        await asyncio.to_thread(store.write_manifest, name.without_digest(), manifest.raw)
    except ServerError as exc:  # a blob removed behind our back (MissingBlob), a bad name...
        raise RegistryError(exc.message, exc.status) from None
    if previous is not None and previous != manifest.raw and not store.store.noprune:
        yield {"status": "removing unused layers"}
    yield {"status": "success"}
