"""An app with the inference routes over a real store in a temp directory (real runners).

`add_model` writes a model into the store the way /api/create would lay it out (GGUF blob,
config blob, optional template/system/params/messages layers, manifest).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI

from server.config import Config
from server.routes.inference import install, shutdown
from server.store import (MEDIA_CONFIG, MEDIA_MESSAGES, MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE,
                          Layer, Manifest, Store)
from toolchain.names import parse_name


def add_model(store: Store, name: str, gguf: Path, *, template: Optional[str] = None, system: Optional[str] = None,
              params: Optional[dict[str, Any]] = None, messages: Optional[list[dict[str, Any]]] = None) -> None:
    with open(gguf, "rb") as f:
        model = store.write_blob(f)
    layers = [Layer(MEDIA_MODEL, model.digest, model.size)]
    for media, value in ((MEDIA_TEMPLATE, template), (MEDIA_SYSTEM, system)):
        if value is not None:
            blob = store.put_bytes(value.encode())
            layers.append(Layer(media, blob.digest, blob.size))
    for media, value in ((MEDIA_PARAMS, params), (MEDIA_MESSAGES, messages)):
        if value is not None:
            blob = store.put_bytes(json.dumps(value).encode())
            layers.append(Layer(media, blob.digest, blob.size))
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
              "model_type": "1M", "file_type": "F32", "rootfs": {"type": "layers", "diff_ids": []}}
    blob = store.put_bytes(json.dumps(config).encode())
    store.write_manifest(parse_name(name), Manifest(config=Layer(MEDIA_CONFIG, blob.digest, blob.size),
                                                    layers=layers))


def make_app(root: Path, **env: str) -> FastAPI:
    """`env`: OLLAMA_* settings for the scheduler (e.g. OLLAMA_NUM_PARALLEL="2")."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await shutdown(app)

    app = FastAPI(lifespan=lifespan)
    app.state.store = Store(root)
    app.state.config = Config.from_env({"OLLAMA_MODELS": str(root), **env})
    install(app)
    return app
