"""Builds models directly in a store directory (Ollama's layout), for registry tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from server.manifest import MEDIA_CONFIG, MEDIA_MANIFEST


def put_blob(models: Path, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = Path(models) / "blobs" / digest.replace(":", "-")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def manifest_bytes(config: dict, layers: list[dict]) -> bytes:
    obj = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config, "layers": layers}
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def put_model(models: Path, name_path: str, model_bytes: bytes, template: str = "{{ .Prompt }}") -> bytes:
    """Store a model under manifests/<name_path> (host/ns/model/tag); return the manifest bytes."""
    model = {"mediaType": "application/vnd.ollama.image.model", **put_blob(models, model_bytes)}
    tmpl = {"mediaType": "application/vnd.ollama.image.template", **put_blob(models, template.encode())}
    cfg = json.dumps({"model_format": "gguf", "model_family": "llama", "architecture": "amd64", "os": "linux"})
    config = {"mediaType": MEDIA_CONFIG, **put_blob(models, cfg.encode() + b"\n")}
    raw = manifest_bytes(config, [model, tmpl])
    path = Path(models) / "manifests" / name_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def store_files(models: Path) -> dict[str, bytes]:
    """Every file under a store (relative path -> bytes), to prove a failure changed nothing."""
    root = Path(models)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
