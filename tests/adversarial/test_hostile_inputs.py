"""Hostile inputs against a real `stack serve`: each one answered with its exact 4xx status and
message, nothing outside the store created, changed or deleted (a canary file next to the store is
checked after every request), and the server still answering `GET /` within a second afterwards.

The rows are in `tests/adversarial/cases.py`; the tests below cover what a row cannot say
(cut-off bodies, parallel uploads, symlinks planted in the store, framing attacks).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading

import httpx
import ollama
import pytest

from server.http_protocol import TOO_LARGE_RESPONSE
from tests.adversarial.cases import CASES, Case
from tests.adversarial.conftest import SECRET, Hostile, tree


@pytest.fixture(scope="module")
def ready(hostile: Hostile, tiny_gguf) -> Hostile:
    client = ollama.Client(host=hostile.url)
    digest = client.create_blob(tiny_gguf)
    client.create(model="base", files={"tiny.gguf": digest})
    subs = {"{canary}": str(hostile.canary)}
    for key, data in {
        "{blob}": b"a small blob that is not a model",
        "{gguf4}": b"GGUF",
        "{badgguf}": b"GGUF" + struct.pack("<IQQ", 3, 1 << 63, 1 << 63),
    }.items():
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        assert httpx.post(f"{hostile.url}/api/blobs/{d}", content=data).status_code == 201
        subs[key] = d
    hostile.subs = subs
    hostile.before = tree(hostile.root, hostile.server.models)
    return hostile


def fill(text: str, subs: dict) -> str:
    for k, v in subs.items():
        text = text.replace(k, v)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(ready: Hostile, case: Case):
    store_before = tree(ready.server.models, ready.root / "nothing")
    body = case.body
    if isinstance(body, str):
        body = fill(body, {k: v.replace("\\", "\\\\") for k, v in ready.subs.items()}).encode()
    status, raw = ready.raw(case.method, fill(case.path, ready.subs), body, case.headers)
    answer = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(raw) if raw else ""
    except ValueError:
        parsed = answer
    assert SECRET.decode().strip() not in answer
    expected = case.answer
    if isinstance(expected, dict):
        expected = json.loads(fill(json.dumps(expected), {k: json.dumps(v)[1:-1] for k, v in ready.subs.items()}))
    assert (status, parsed) == (case.status, expected)
    ready.check_intact()
    if case.status >= 400:  # a refused request writes nothing visible in the store either
        after = tree(ready.server.models, ready.root / "nothing")
        assert {k for k in after if "/.tmp-" not in k and not k.startswith("blobs/.tmp-")} == {
            k for k in store_before if "/.tmp-" not in k and not k.startswith("blobs/.tmp-")}


# -- what a table row cannot say --------------------------------------------------------------------


def _blob_files(h: Hostile) -> list[str]:
    return sorted(p.name for p in (h.server.models / "blobs").iterdir())


def _until_no_temp_files(h: Hostile) -> None:
    for _ in range(200):  # bounded: the server removes an aborted upload's temp file when it notices
        if not any(name.startswith(".tmp-") for name in _blob_files(h)):
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"temp files left behind: {_blob_files(h)}")


def test_cut_off_blob_upload_leaves_nothing(ready: Hostile):
    data = os.urandom(1 << 16)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before = _blob_files(ready)
    with socket.create_connection(("127.0.0.1", ready.server.port)) as s:
        s.sendall(f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        s.sendall(data[:1000])  # then hang up mid-body
    _until_no_temp_files(ready)
    assert _blob_files(ready) == before
    ready.check_intact()
    r = httpx.post(f"{ready.url}/api/blobs/{digest}", content=data)  # the retry succeeds
    assert r.status_code == 201 and ("sha256-" + digest[7:]) in _blob_files(ready)


def test_parallel_uploads_of_one_blob(ready: Hostile):
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    statuses: list[int] = []

    def upload() -> None:
        statuses.append(httpx.post(f"{ready.url}/api/blobs/{digest}", content=data, timeout=60).status_code)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) in ([200, 201], [201]) and len(statuses) == 8
    path = ready.server.models / "blobs" / ("sha256-" + digest[7:])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest[7:]
    _until_no_temp_files(ready)
    ready.check_intact()


def test_parallel_creates_of_one_name(ready: Hostile):
    def create(system: str) -> int:
        return httpx.post(f"{ready.url}/api/create", json={"model": "race", "from": "base", "system": system,
                                                            "stream": False}, timeout=60).status_code

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(create(f"s{i}"))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    show = httpx.post(f"{ready.url}/api/show", json={"model": "race"}).json()
    assert show["system"] in {f"s{i}" for i in range(6)}  # one of them won, whole
    assert httpx.request("DELETE", f"{ready.url}/api/delete", json={"model": "race"}).status_code == 200
    ready.check_intact()


def test_symlink_planted_in_the_store_is_never_followed_out(ready: Hostile):
    """Someone with write access to the store planted links to the canary: the store resolves
    every path before use and refuses one that leads outside, so neither show nor delete reads,
    removes or reveals the canary."""
    manifests = ready.server.models / "manifests" / "registry.ollama.ai" / "library" / "planted"
    manifests.mkdir(parents=True)
    (manifests / "latest").symlink_to(ready.canary)
    link_blob = ready.server.models / "blobs" / ("sha256-" + hashlib.sha256(SECRET).hexdigest())
    link_blob.symlink_to(ready.canary)
    try:
        tags = httpx.get(f"{ready.url}/api/tags")
        assert tags.status_code == 200 and "planted" not in tags.text
        r = httpx.post(f"{ready.url}/api/show", json={"model": "planted"})
        assert SECRET.decode().strip() not in r.text
        assert (r.status_code, r.json()) == (400, {"error": "path escapes the model store"})
        r = httpx.request("DELETE", f"{ready.url}/api/delete", json={"model": "planted"})
        assert (r.status_code, r.json()) == (400, {"error": "path escapes the model store"})
        assert SECRET.decode().strip() not in r.text
        assert ready.canary.read_bytes() == SECRET
    finally:
        for link in (manifests / "latest", link_blob):
            if link.is_symlink():
                link.unlink()
        for d in (manifests, manifests.parent):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
    ready.check_intact()


def test_request_smuggling_framing_is_refused(ready: Hostile):
    with socket.create_connection(("127.0.0.1", ready.server.port), timeout=10) as s:
        s.sendall(b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\nGET /api/delete HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 ")
    ready.check_intact()


def test_oversized_headers_are_refused(ready: Hostile):
    _, reply = _raw_status(ready, b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    assert reply == TOO_LARGE_RESPONSE
    ready.check_intact()


def _raw_status(h: Hostile, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", h.server.port), timeout=10) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = s.recv(65536)
    return int(reply.split(b" ", 2)[1]), reply


def test_slow_clients_do_not_block_others(ready: Hostile):
    """Fifty connections that send half a request line and stall: everyone else is still served."""
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", ready.server.port), timeout=10)
            s.sendall(b"POST /api/create HTTP/1.1\r\nHost: local")
            socks.append(s)
        ready.check_intact()
        assert httpx.get(f"{ready.url}/api/tags", timeout=1.0).status_code == 200
    finally:
        for s in socks:
            s.close()
