"""Concurrent creates, copies and deletes on one server: every answer is clean and the store stays sound."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import httpx

from server.store import Store


def test_parallel_management_keeps_the_store_sound(stack_server, tiny_gguf):
    url = stack_server.url
    data = tiny_gguf.read_bytes()
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{url}/api/blobs/{d}", content=data).status_code == 201
    assert httpx.post(f"{url}/api/create", json={"model": "base", "files": {"m.gguf": d}, "stream": False}).status_code == 200

    def job(i: int) -> int:
        with httpx.Client(base_url=url, timeout=60) as c:
            kind = i % 4
            if kind == 0:
                r = c.post("/api/create", json={"model": f"child{i % 3}", "from": "base", "system": f"s{i}", "stream": False})
            elif kind == 1:
                r = c.post("/api/create", json={"model": "same", "files": {"m.gguf": d}, "system": f"v{i}", "stream": False})
            elif kind == 2:
                r = c.post("/api/copy", json={"source": "same", "destination": f"copy{i % 2}"})
            else:
                r = c.request("DELETE", "/api/delete", json={"model": f"child{i % 3}"})
            return r.status_code, r.text

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(job, range(48)))
    # 404: copied or deleted before it existed
    assert {status for status, _ in statuses} <= {200, 404}, [s for s in statuses if s[0] != 200]
    assert Store(stack_server.models).verify() == []
    names = {m["name"] for m in httpx.get(f"{url}/api/tags").json()["models"]}
    assert {"base:latest", "same:latest"} <= names


def test_server_killed_mid_upload_leaves_no_visible_blob(tmp_path):
    """kill -9 while a blob streams in: after restart the store is sound and the blob is absent."""
    import os
    import signal
    import threading
    import time

    from tests.support.server import start_server

    models = tmp_path / "models"
    srv = start_server(models)
    release = threading.Event()
    digest = "sha256:" + "d" * 64

    def body():
        yield b"x" * (1 << 20)
        release.wait(30)  # hold the upload open until the server is gone
        yield b"y"

    def upload():
        try:
            httpx.post(f"{srv.url}/api/blobs/{digest}", content=body(), timeout=30)
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=upload)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not any(p.name.startswith(".tmp-") for p in (models / "blobs").iterdir()):
            assert time.monotonic() < deadline, "upload never started"
            time.sleep(0.02)
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(timeout=10)
    finally:
        release.set()
        t.join(timeout=30)
        srv.stop()
    with start_server(models) as again:
        assert httpx.head(f"{again.url}/api/blobs/{digest}").status_code == 404
        assert [p.name for p in (models / "blobs").iterdir() if not p.name.startswith(".tmp-")] == []
        assert Store(models).verify() == []
