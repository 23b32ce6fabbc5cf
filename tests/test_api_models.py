"""The model-management API on a real `stack serve`, through httpx and the official `ollama` client."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import ollama
import pytest

from tests.support.server import ServerProcess, start_server

CONFIG_TINY = (
    b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"123K",'
    b'"file_type":"unknown","architecture":"amd64","os":"linux"}\n'
)


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def upload(srv: ServerProcess, path: Path) -> str:
    d = digest_of(path)
    r = httpx.post(f"{srv.url}/api/blobs/{d}", content=path.read_bytes())
    assert r.status_code in (200, 201), r.text
    return d


def store_files(srv: ServerProcess) -> dict[str, bytes]:
    """Everything a reader of the store could see (temp files are invisible by design)."""
    return {
        str(p.relative_to(srv.models)): p.read_bytes()
        for p in sorted(srv.models.rglob("*"))
        if p.is_file() and not p.name.startswith(".tmp-")
    }


def manifest_digest(srv: ServerProcess, name: str) -> str:
    tags = httpx.get(f"{srv.url}/api/tags").json()["models"]
    return next(m["digest"] for m in tags if m["name"] == name)


# -- plumbing -----------------------------------------------------------------------------------


def test_root_version_and_unknown_routes(shared_stack_server):
    url = shared_stack_server.url
    r = httpx.get(url + "/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert r.headers["content-type"].startswith("text/plain")
    assert httpx.head(url + "/").status_code == 200
    assert "version" in httpx.get(url + "/api/version").json()
    assert httpx.head(url + "/api/tags").status_code == 200
    r = httpx.get(url + "/api/nope")
    assert (r.status_code, r.text) == (404, "404 page not found")
    r = httpx.get(url + "/api/show")
    assert (r.status_code, r.text) == (405, "405 method not allowed")


# -- the official client -------------------------------------------------------------------------


def test_official_client_lifecycle(stack_server, tiny_gguf):
    client = ollama.Client(host=stack_server.url)
    assert client.list().models == [] and httpx.get(stack_server.url + "/api/tags").json() == {"models": []}
    digest = client.create_blob(tiny_gguf)
    assert digest == digest_of(tiny_gguf)
    done = client.create(
        model="tiny",
        files={"tiny.gguf": digest},
        template="{{ .System }} {{ .Prompt }}",
        system="You are terse.",
        parameters={"temperature": 0.5, "stop": ["</s>", "<|end|>"], "num_ctx": 512},
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        license="MIT",
    )
    assert done.status == "success"
    progress = [p.status for p in client.create(model="tiny-terser", from_="tiny", system="Terser.", stream=True)]
    assert progress[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("creating new layer sha256:") for s in progress)

    listed = client.list()
    assert [m.model for m in listed.models] == ["tiny-terser:latest", "tiny:latest"]
    tiny = listed.models[1]
    assert tiny.details.family == "llama" and tiny.details.format == "gguf" and tiny.size > tiny_gguf.stat().st_size

    shown = client.show("tiny")
    assert shown.template == "{{ .System }} {{ .Prompt }}"
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.capabilities == ["completion"]
    assert shown.details.parent_model == "tiny.gguf"
    assert 'stop                           "</s>"' in shown.parameters.splitlines()
    assert "PARAMETER temperature 0.5" in shown.modelfile and "# FROM tiny:latest" in shown.modelfile
    assert client.show("tiny-terser").details.parent_model == "tiny:latest"

    assert client.copy("tiny", "team/tiny:v1").status == "success"
    assert client.delete("tiny").status == "success"
    assert {m.model for m in client.list().models} == {"tiny-terser:latest", "team/tiny:v1"}
    with pytest.raises(ollama.ResponseError) as err:
        client.show("tiny")
    assert err.value.status_code == 404 and "not found" in err.value.error


def test_show_body_shape(shared_stack_server, tiny_gguf):
    d = upload(shared_stack_server, tiny_gguf)
    httpx.post(f"{shared_stack_server.url}/api/create", json={"model": "t", "files": {"t.gguf": d}, "stream": False})
    body = httpx.post(f"{shared_stack_server.url}/api/show", json={"model": "T"}).json()  # case-insensitive
    assert body["details"] == {
        "parent_model": "t.gguf", "format": "gguf", "family": "llama", "families": ["llama"],
        "parameter_size": "123K", "quantization_level": "unknown",
    }
    assert body["template"] == "{{ .Prompt }}"
    assert body["model_info"]["tokenizer.ggml.tokens"] is None
    assert body["modified_at"].endswith("Z") or "+" in body["modified_at"]
    assert body["tensors"][0] == {"name": "token_embd.weight", "type": "F32", "shape": [64, 386]}
    verbose = httpx.post(f"{shared_stack_server.url}/api/show", json={"model": "t", "verbose": True}).json()
    assert verbose["model_info"]["tokenizer.ggml.tokens"][:2] == ["<unk>", "<s>"]


# -- create: encodings, determinism, both shapes ------------------------------------------------------


def test_created_model_is_byte_compatible_with_ollama(shared_stack_server, tiny_gguf):
    d = upload(shared_stack_server, tiny_gguf)
    r = httpx.post(
        f"{shared_stack_server.url}/api/create",
        json={"model": "m", "files": {"tiny.gguf": d}, "parameters": {"temperature": 1.0, "stop": ["<x>"]},
              "messages": [{"role": "User", "content": "a&b"}], "stream": False},
    )
    assert r.json() == {"status": "success"}
    manifest_path = shared_stack_server.models / "manifests/registry.ollama.ai/library/m/latest"
    manifest = json.loads(manifest_path.read_bytes())
    blobs = {layer["mediaType"].rsplit(".", 1)[-1]: layer for layer in manifest["layers"]}
    blob = lambda layer: (shared_stack_server.models / "blobs" / layer["digest"].replace(":", "-")).read_bytes()
    assert blobs["model"] == {"mediaType": "application/vnd.ollama.image.model", "digest": d,
                              "size": tiny_gguf.stat().st_size, "from": "tiny.gguf"}
    assert blob(blobs["params"]) == b'{"stop":["\\u003cx\\u003e"],"temperature":1}\n'
    assert blob(blobs["messages"]) == b'[{"role":"user","content":"a\\u0026b"}]\n'
    assert blob(manifest["config"]) == CONFIG_TINY
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest_path.read_bytes().endswith(b"]}\n")


def test_same_request_twice_gives_the_same_manifest(shared_stack_server, tiny_gguf):
    d = upload(shared_stack_server, tiny_gguf)
    body = {"files": {"tiny.gguf": d}, "system": "s", "parameters": {"top_k": 3}, "stream": False}
    httpx.post(f"{shared_stack_server.url}/api/create", json={"model": "one", **body})
    httpx.post(f"{shared_stack_server.url}/api/create", json={"model": "two", **body})
    first = manifest_digest(shared_stack_server, "one:latest")
    assert first == manifest_digest(shared_stack_server, "two:latest")
    httpx.post(f"{shared_stack_server.url}/api/create", json={"model": "one", **body})
    assert manifest_digest(shared_stack_server, "one:latest") == first


def test_legacy_modelfile_shape(shared_stack_server, tiny_gguf):
    d = upload(shared_stack_server, tiny_gguf)
    r = httpx.post(
        f"{shared_stack_server.url}/api/create",
        json={"model": "legacy", "modelfile": f"FROM @{d}\nPARAMETER stop <end>\nPARAMETER stop <eot>\nSYSTEM hi"},
    )
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert lines[0] == {"status": "parsing modelfile"} and lines[-1] == {"status": "success"}
    shown = httpx.post(f"{shared_stack_server.url}/api/show", json={"model": "legacy"}).json()
    assert shown["system"] == "hi" and shown["parameters"].count("stop") == 2
    # FROM an existing model by name, legacy shape
    r = httpx.post(f"{shared_stack_server.url}/api/create",
                   json={"model": "legacy2", "modelfile": "FROM legacy\nPARAMETER temperature 0.2", "stream": False})
    assert r.json() == {"status": "success"}
    assert "temperature" in httpx.post(f"{shared_stack_server.url}/api/show", json={"model": "legacy2"}).json()["parameters"]


def test_serves_a_store_written_by_ollama(tmp_path, tiny_gguf):
    """A store laid out by hand exactly as Ollama writes it (pulled manifest bytes kept verbatim)."""
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)

    def blob(data: bytes) -> dict:
        hexd = hashlib.sha256(data).hexdigest()
        (models / "blobs" / f"sha256-{hexd}").write_bytes(data)
        return {"digest": f"sha256:{hexd}", "size": len(data)}

    weights = blob(tiny_gguf.read_bytes())
    template = blob(b"{{ if .Tools }}tools{{ end }}{{ .Prompt }}{{ .Suffix }}")
    params = blob(b'{"num_ctx":4096,"stop":["\\u003c/s\\u003e"]}\n')
    config = blob(b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"8.0B",'
                  b'"file_type":"Q4_K_M","architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}\n')
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", **weights},
                   {"mediaType": "application/vnd.ollama.image.template", **template},
                   {"mediaType": "application/vnd.ollama.image.params", **params}],
    }
    raw = json.dumps(manifest, indent=2).encode()
    mdir = models / "manifests" / "registry.ollama.ai" / "library" / "llama3"
    mdir.mkdir(parents=True)
    (mdir / "8b").write_bytes(raw)
    with start_server(models) as srv:
        client = ollama.Client(host=srv.url)
        [m] = client.list().models
        assert (m.model, m.digest, m.details.parameter_size) == ("llama3:8b", hashlib.sha256(raw).hexdigest(), "8.0B")
        shown = client.show("LLAMA3:8B")
        assert shown.capabilities == ["completion", "tools", "insert"]
        assert 'num_ctx                        4096' in shown.parameters
        # a model created FROM it inherits its layers and loads its config
        client.create(model="mine", from_="llama3:8b", system="s")
        assert client.show("mine").details.parent_model == "llama3:8b"
        assert (mdir / "8b").read_bytes() == raw  # never rewritten


def test_startup_prune_and_noprune(tmp_path):
    models = tmp_path / "models"
    (models / "blobs").mkdir(parents=True)
    orphan = models / "blobs" / f"sha256-{'b' * 64}"
    orphan.write_bytes(b"x")
    stale_tmp = models / "blobs" / ".tmp-crashed"
    stale_tmp.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    os.utime(stale_tmp, (old, old))
    with start_server(models, env={"OLLAMA_NOPRUNE": "1"}):
        pass
    assert orphan.exists()
    with start_server(models):
        pass
    assert not orphan.exists() and not stale_tmp.exists()
