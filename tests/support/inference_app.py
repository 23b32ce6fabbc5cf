"""The real app (`server.app.create_app`) in-process for inference tests, with real runners.

`create_model(client, name, gguf, **fields)` uploads the GGUF through `/api/blobs` and creates the
model through `/api/create` (fields: template, system, parameters, messages), as a client would.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterator

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
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run `app` under a real uvicorn on a free loopback port in this process (so that a test can
    look at its scheduler and runners); yields the base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
