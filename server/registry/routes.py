"""The registry side of `stack serve`: Docker Registry HTTP API v2 endpoints served from the store.

Repository ``<namespace>/<model>`` with tag ``<tag>`` is the local model
``<namespace>/<model>:<tag>`` (host ``registry.ollama.ai``, the host a name without one
gets): a model created on the team server as ``team/support-bot:v2`` is pulled from it as
``<server>:<port>/team/support-bot:v2``, and a model pushed there under that name
appears on the server as ``team/support-bot:v2``.

Reads: ``GET /v2/``, ``GET|HEAD .../manifests/<tag or sha256 digest>``,
``GET|HEAD .../blobs/<digest>`` (with ``Range``). Writes (push): upload sessions
``POST .../blobs/uploads/`` (``?mount=`` answers 201 for a blob the store holds,
``?digest=`` with a body is a monolithic upload), ``PATCH``/``PUT``/``GET``/``DELETE
.../blobs/uploads/<session>``, and ``PUT .../manifests/<tag>``, which requires every
referenced blob to be present with its declared size. An uploaded blob becomes visible
only after its bytes hashed to the digest given at commit. Writes answer 403 when
``CORRAL_REGISTRY_PUSH`` is off.

Errors use the registry's shape ``{"errors": [{"code", "message", "detail"}]}``.
"""

from __future__ import annotations

import asyncio
import errno
import time
import uuid
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from server.errors import DigestMismatch
from server.manifest import (
    MAX_BLOB_SIZE,
    MAX_MANIFEST_BYTES,
    MEDIA_MANIFEST,
    TOO_LARGE,
    ManifestError,
    digest_of,
    is_blob_digest,
    parse,
)
from server.registry.storage import RegistryStore
from toolchain.names import DEFAULT_HOST, Name

__all__ = ["router", "MAX_UPLOAD_SESSIONS", "SESSION_TTL"]

router = APIRouter()

#: Open upload sessions at once; more are refused with 429 until some finish.
MAX_UPLOAD_SESSIONS = 64
#: An upload session untouched for this many seconds is removed.
SESSION_TTL = 3600.0
_CHUNK = 1 << 20


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "message": message, "detail": None}]}, status_code=status)


def _store(request: Request) -> RegistryStore:
    return request.app.state.registry_store


def _push_enabled(request: Request) -> bool:
    return request.app.state.config.registry_push


def _name(namespace: str, model: str, tag: str = "latest") -> Name | None:
    name = Name(scheme="https", host=DEFAULT_HOST, namespace=namespace, model=model, tag=tag)
    return name if name.is_valid() else None


def _push_denied() -> JSONResponse:
    return _error(403, "DENIED", "pushing to this server is disabled (CORRAL_REGISTRY_PUSH=0)")


@router.get("/v2/")
@router.get("/v2")
async def base() -> JSONResponse:
    return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})


# -- manifests ------------------------------------------------------------------------


@router.api_route("/v2/{namespace}/{model}/manifests/{reference}", methods=["GET", "HEAD"])
async def get_manifest(request: Request, namespace: str, model: str, reference: str) -> Response:
    store = _store(request)
    if _name(namespace, model) is None:
        return _error(400, "NAME_INVALID", "invalid repository name")
    if reference.startswith("sha256:"):
        if not is_blob_digest(reference):
            return _error(400, "DIGEST_INVALID", "invalid digest format")
        raw = await asyncio.to_thread(store.manifest_by_digest, namespace, model, reference)
    else:
        name = _name(namespace, model, reference)
        if name is None:
            return _error(400, "TAG_INVALID", "invalid tag")
        raw = await asyncio.to_thread(store.read_manifest, name)
    if raw is None:
        return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
    headers = {"Docker-Content-Digest": digest_of(raw), "Content-Length": str(len(raw))}
    body = b"" if request.method == "HEAD" else raw
    return Response(body, media_type=MEDIA_MANIFEST, headers=headers)


@router.put("/v2/{namespace}/{model}/manifests/{reference}")
async def put_manifest(request: Request, namespace: str, model: str, reference: str) -> Response:
    if not _push_enabled(request):
        return _push_denied()
    if _name(namespace, model) is None:
        return _error(400, "NAME_INVALID", "invalid repository name")
    name = _name(namespace, model, reference)
    if name is None:
        return _error(400, "TAG_INVALID", "a manifest is pushed to a valid tag")
    raw = await _read_body(request, MAX_MANIFEST_BYTES)
    if raw is None:
        return _error(413, "SIZE_INVALID", TOO_LARGE)
    try:
        manifest = parse(raw, strict=True)
    except ManifestError as exc:
        return _error(400, "MANIFEST_INVALID", str(exc))
    store = _store(request)
    for desc in manifest.blobs():
        size = store.blob_size(desc.digest)
        if size is None:
            return _error(400, "MANIFEST_BLOB_UNKNOWN", f"blob {desc.digest} is not on this server")
        if size != desc.size:
            return _error(400, "SIZE_INVALID", f"blob {desc.digest} has {size} bytes, the manifest says {desc.size}")
    await asyncio.to_thread(store.write_manifest, name, raw)
    digest = digest_of(raw)
    return Response(
        status_code=201,
        headers={"Location": f"/v2/{namespace}/{model}/manifests/{digest}", "Docker-Content-Digest": digest},
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > limit:
            return None
    return bytes(out)


# -- blobs ----------------------------------------------------------------------------


@router.api_route("/v2/{namespace}/{model}/blobs/{digest}", methods=["GET", "HEAD"])
async def get_blob(request: Request, namespace: str, model: str, digest: str) -> Response:
    if _name(namespace, model) is None:
        return _error(400, "NAME_INVALID", "invalid repository name")
    if not is_blob_digest(digest):
        return _error(400, "DIGEST_INVALID", "invalid digest format")
    path = _store(request).blob_path(digest)
    if not path.is_file():
        return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
    # Ollama's puller takes the blob URL to fetch ranges from out of `Location` (registry.ollama.ai
    # redirects to a CDN) and fails without one; here the blob is served where it was asked for.
    headers = {"Docker-Content-Digest": digest, "Location": request.url.path}
    return FileResponse(path, media_type="application/octet-stream", headers=headers)


# -- upload sessions (push) -------------------------------------------------------------


def _session_path(store: RegistryStore, session: str) -> Path | None:
    """The file of an open upload session; None for an unknown (or malformed) session id."""
    try:
        path = store.uploads_dir() / uuid.UUID(hex=session).hex
    except ValueError:
        return None
    return path if path.is_file() else None


def _unknown_upload() -> JSONResponse:
    return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")


def _expire_sessions(directory: Path) -> int:
    """Remove sessions untouched for SESSION_TTL; return how many remain."""
    now, remaining = time.time(), 0
    for path in directory.iterdir():
        try:
            if now - path.stat().st_mtime > SESSION_TTL:
                path.unlink()
            else:
                remaining += 1
        except FileNotFoundError:
            pass
    return remaining


def _session_headers(request: Request, namespace: str, model: str, session: str, size: int) -> dict[str, str]:
    # Absolute: Ollama's client parses the Location as is and sends the next PATCH/PUT to it.
    base = str(request.base_url).rstrip("/")
    return {
        "Location": f"{base}/v2/{namespace}/{model}/blobs/uploads/{session}",
        "Docker-Upload-UUID": session,
        "Range": f"0-{max(size - 1, 0)}",
    }


class _DiskFull(Exception):
    pass


async def _append(request: Request, path: Path) -> int | None:
    """Append the request body to a session file; None if the blob would exceed MAX_BLOB_SIZE.

    A full disk (ENOSPC, EFBIG, EDQUOT) removes the session and raises _DiskFull.
    """
    size = path.stat().st_size
    try:
        with path.open("ab") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BLOB_SIZE:
                    return None
                f.write(chunk)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            path.unlink(missing_ok=True)
            raise _DiskFull() from None
        raise
    return size


def _disk_full() -> JSONResponse:
    return _error(507, "DISK_FULL", "no space left on device")


async def _finish(
    request: Request, store: RegistryStore, path: Path, digest: str, namespace: str, model: str
) -> Response:
    """Append the last bytes (the request body) to session `path` and commit it as blob `digest`;
    the session is gone afterwards unless the disk was full mid-append."""
    if not is_blob_digest(digest):
        path.unlink(missing_ok=True)
        return _error(400, "DIGEST_INVALID", "invalid digest format")
    try:
        if await _append(request, path) is None:
            path.unlink(missing_ok=True)
            return _error(413, "SIZE_INVALID", "blob too large")
    except _DiskFull:
        return _disk_full()
    return await _commit(store, path, digest, namespace, model)


async def _commit(store: RegistryStore, staged: Path, digest: str, namespace: str, model: str) -> Response:
    try:
        await asyncio.to_thread(store.adopt_blob, staged, digest)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return _disk_full()
        raise
    except DigestMismatch as exc:
        return _error(400, "DIGEST_INVALID", f"provided digest {digest} did not match uploaded content {exc.got}")
    return _blob_created(namespace, model, digest)


def _blob_created(namespace: str, model: str, digest: str) -> Response:
    headers = {"Location": f"/v2/{namespace}/{model}/blobs/{digest}", "Docker-Content-Digest": digest}
    return Response(status_code=201, headers=headers)


@router.post("/v2/{namespace}/{model}/blobs/uploads/")
async def start_upload(request: Request, namespace: str, model: str) -> Response:
    if not _push_enabled(request):
        return _push_denied()
    if _name(namespace, model) is None:
        return _error(400, "NAME_INVALID", "invalid repository name")
    store = _store(request)
    mount = request.query_params.get("mount")
    if mount is not None and is_blob_digest(mount) and store.blob_size(mount) is not None:
        return _blob_created(namespace, model, mount)
    directory = store.uploads_dir()
    if await asyncio.to_thread(_expire_sessions, directory) >= MAX_UPLOAD_SESSIONS:
        return _error(429, "TOOMANYREQUESTS", "too many uploads in progress")
    session = uuid.uuid4().hex
    path = directory / session
    path.touch()
    digest = request.query_params.get("digest")
    if digest is not None:  # monolithic upload: POST ?digest= with the whole blob as body
        return await _finish(request, store, path, digest, namespace, model)
    return Response(status_code=202, headers=_session_headers(request, namespace, model, session, 0))


@router.patch("/v2/{namespace}/{model}/blobs/uploads/{session}")
async def patch_upload(request: Request, namespace: str, model: str, session: str) -> Response:
    if not _push_enabled(request):
        return _push_denied()
    path = _session_path(_store(request), session)
    if path is None:
        return _unknown_upload()
    size = path.stat().st_size
    content_range = request.headers.get("content-range")
    if content_range:
        start, _, _end = content_range.removeprefix("bytes=").partition("-")
        if not start.isdigit() or int(start) != size:
            return Response(status_code=416, headers=_session_headers(request, namespace, model, session, size))
    try:
        new_size = await _append(request, path)
    except _DiskFull:
        return _disk_full()
    if new_size is None:
        path.unlink(missing_ok=True)
        return _error(413, "SIZE_INVALID", "blob too large")
    return Response(status_code=202, headers=_session_headers(request, namespace, model, session, new_size))


@router.put("/v2/{namespace}/{model}/blobs/uploads/{session}")
async def finish_upload(request: Request, namespace: str, model: str, session: str) -> Response:
    if not _push_enabled(request):
        return _push_denied()
    store = _store(request)
    path = _session_path(store, session)
    if path is None:
        return _unknown_upload()
    return await _finish(request, store, path, request.query_params.get("digest", ""), namespace, model)


@router.get("/v2/{namespace}/{model}/blobs/uploads/{session}")
async def upload_status(request: Request, namespace: str, model: str, session: str) -> Response:
    path = _session_path(_store(request), session)
    if path is None:
        return _unknown_upload()
    return Response(status_code=204, headers=_session_headers(request, namespace, model, session, path.stat().st_size))


@router.delete("/v2/{namespace}/{model}/blobs/uploads/{session}")
async def cancel_upload(request: Request, namespace: str, model: str, session: str) -> Response:
    if not _push_enabled(request):
        return _push_denied()
    path = _session_path(_store(request), session)
    if path is None:
        return _unknown_upload()
    path.unlink(missing_ok=True)
    return Response(status_code=204)
