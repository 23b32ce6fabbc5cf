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
