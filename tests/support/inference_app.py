"""The real app (`server.app.create_app`) in this process, with real runners: through a
TestClient (`make_app`) or on a real uvicorn in a thread (`serve_in_thread`).

`create_model(client, name, gguf, **fields)` uploads the GGUF through `/api/blobs` and creates the
model through `/api/create` (fields: template, system, parameters, messages), as a client would.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Config


def make_app(root: Path, **env: str) -> FastAPI:
    """`env`: OLLAMA_* settings (e.g. OLLAMA_NUM_PARALLEL="2"); the store lives in `root`."""
    return create_app(Config.from_env({"OLLAMA_MODELS": str(root), **env}))


def create_model(client: TestClient, name: str, gguf: Path, **fields: Any) -> None:
    data = Path(gguf).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = client.post(f"/api/blobs/{digest}", content=data)
    assert resp.status_code in (200, 201), resp.text
    resp = client.post("/api/create", json={"model": name, "files": {Path(gguf).name: digest}, "stream": False,
                                            **fields})
    assert resp.status_code == 200 and resp.json().get("status") == "success", resp.text


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, *, tls: tuple[Path, Path] | None = None, lifespan: str = "on") -> Iterator[str]:
    """Run `app` under a real uvicorn on a free loopback port in this process (so that a test can
    look at its scheduler and runners); yields the base URL. `tls` = (certificate, key) serves HTTPS."""
    sock = socket.create_server(("127.0.0.1", 0))  # bound before uvicorn starts: no port race
    port = sock.getsockname()[1]
    ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan, **ssl))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # bounded wait for start-up
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
