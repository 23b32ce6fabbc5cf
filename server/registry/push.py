"""Push a model from the store to a registry (`POST /api/push`).

For each blob (layers, then config): ``HEAD`` to skip one the registry has, else
``POST <repo>/blobs/uploads/`` (with ``?mount=<digest>`` so a registry holding the blob
elsewhere can link it: ``201``), ``PATCH`` the bytes in chunks with ``Content-Range``
to the ``Location`` each answer gives, and ``PUT <location>?digest=<digest>`` to
commit. Then ``PUT <repo>/manifests/<tag>`` with the manifest bytes exactly as stored,
so the pushed model has the same digest on both sides (Ollama re-serialises the
manifest, which drops the trailing newline of a locally created one and changes its
digest).

Progress messages are Ollama's: `retrieving manifest`, `pushing <hex12>` with
total/completed, `pushing manifest`, `success`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import httpx

from server import observe
from server.manifest import MEDIA_MANIFEST, Layer, ManifestError, parse
from server.registry.client import Remote
from server.registry.credentials import Credentials
from server.registry.errors import RegistryError
from server.registry.storage import RegistryStore
from toolchain.names import Name

__all__ = ["push", "PATCH_CHUNK"]

#: Bytes per PATCH request.
PATCH_CHUNK = 64 << 20
_READ = 1 << 20


class _Counter:
    def __init__(self) -> None:
        self.sent = 0


async def _file_chunk(path: Path, start: int, length: int, counter: _Counter) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            data = f.read(min(_READ, left))
            if not data:
                raise RegistryError(f"{path.name} shrank while it was being pushed", 500)
            left -= len(data)
            counter.sent += len(data)
            observe.count_bytes("pushed", len(data))
            yield data


def _progress(desc: Layer, completed: int) -> dict:
    return {"status": f"pushing {desc.short}", "digest": desc.digest, "total": desc.size, "completed": completed}


async def _upload(remote: Remote, store: RegistryStore, desc: Layer, counter: _Counter) -> None:
    async with remote.stream("HEAD", f"{remote.repo}/blobs/{desc.digest}") as response:
        if response.status_code == 200:
            counter.sent = desc.size
            return
        if response.status_code != 404:
            raise await remote.fail(response)

    async with remote.stream("POST", f"{remote.repo}/blobs/uploads/", params={"mount": desc.digest}) as response:
        if response.status_code == 201:
            counter.sent = desc.size
            return
        if response.status_code != 202:
            raise await remote.fail(response)
        location = response.headers.get("docker-upload-location") or response.headers.get("location")
    if not location:
        raise RegistryError("registry did not return an upload location")

    path = store.blob_path(desc.digest)
    offset = 0
    while offset < desc.size:
        length = min(PATCH_CHUNK, desc.size - offset)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        }
        body = _file_chunk(path, offset, length, counter)
        async with remote.stream("PATCH", location, headers=headers, content=body) as response:
            if response.status_code not in (202, 204):
                raise await remote.fail(response)
            location = response.headers.get("docker-upload-location") or response.headers.get("location") or location
        offset += length

    async with remote.stream(
        "PUT", location, headers={"Content-Length": "0"}, content=b"", params={"digest": desc.digest}
    ) as response:
        if response.status_code not in (201, 204):
            raise await remote.fail(response)
    counter.sent = desc.size


async def push(
    store: RegistryStore,
    name: Name,
    *,
    insecure: bool = False,
    credentials: Credentials | None = None,
) -> AsyncIterator[dict]:
    """Yield Ollama's progress messages; raises RegistryError on failure."""
    yield {"status": "retrieving manifest"}
    raw = store.read_manifest(name)
    if raw is None:
        yield {"status": "couldn't retrieve manifest"}
        raise RegistryError(f"model '{name.display_shortest()}' not found", 404)
    try:
        manifest = parse(raw, strict=True)
    except ManifestError as exc:
        raise RegistryError(f"local manifest of {name.display_shortest()}: {exc}", 500) from None

    async with Remote(name, insecure=insecure, credentials=credentials) as remote:
        try:
            for desc in manifest.blobs():
                if store.blob_size(desc.digest) != desc.size:
                    raise RegistryError(f"blob {desc.digest} is missing from the store", 500)
                counter = _Counter()
                task = asyncio.create_task(_upload(remote, store, desc, counter))
                try:
                    yield _progress(desc, 0)
                    while True:
                        done, _ = await asyncio.wait({task}, timeout=0.1)
                        if done:
                            break
                        yield _progress(desc, counter.sent)
                    task.result()
                finally:
                    if not task.done():
                        task.cancel()
                yield _progress(desc, desc.size)

            yield {"status": "pushing manifest"}
            async with remote.stream(
                "PUT",
                f"{remote.repo}/manifests/{name.tag}",
                headers={"Content-Type": MEDIA_MANIFEST},
                content=manifest.raw,
            ) as response:
                if response.status_code not in (200, 201, 202):
                    raise await remote.fail(response)
        except httpx.TransportError as exc:
            raise RegistryError(f"push to {name.host} failed: {exc.__class__.__name__} {exc}".strip()) from None
    yield {"status": "success"}
