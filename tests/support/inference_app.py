"""The real app (`server.app.create_app`) in-process for inference tests, with real runners.

`create_model(client, name, gguf, **fields)` uploads the GGUF through `/api/blobs` and creates the
model through `/api/create` (fields: template, system, parameters, messages), as a client would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

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
