"""Every bad input to the management API: a 4xx whose message names the problem, and nothing written.

Each case snapshots the store before and after the request. Where Ollama answers a client mistake
with a 500 (truncated GGUF, a blob that was never uploaded, a wrong parameter type), this server
answers 400; those cases say so.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.support.server import ServerProcess

HEX = "c" * 64


def snapshot(srv: ServerProcess) -> dict[str, bytes]:
    return {
        str(p.relative_to(srv.models)): p.read_bytes()
        for p in sorted(srv.models.rglob("*"))
        if p.is_file() and not p.name.startswith(".tmp-")
    }


@pytest.fixture(scope="module")
def srv(shared_stack_server: ServerProcess, tmp_path_factory) -> ServerProcess:
    """The shared server with one model `base` and a few uploaded blobs (not yet referenced)."""
    from tests.support.tiny_gguf import write_tiny_llama

    tiny = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    blobs = {"tiny": tiny.read_bytes(), "text": b"definitely not a model", "magic": b"GGUF"}
    blobs["truncated"] = blobs["tiny"][: len(blobs["tiny"]) // 2]
    shared_stack_server.digests = {}
    for key, data in blobs.items():
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        assert httpx.post(f"{shared_stack_server.url}/api/blobs/{d}", content=data).status_code in (200, 201)
        shared_stack_server.digests[key] = d
    r = httpx.post(f"{shared_stack_server.url}/api/create",
                   json={"model": "base", "files": {"tiny.gguf": shared_stack_server.digests["tiny"]}, "stream": False})
    assert r.json() == {"status": "success"}
    return shared_stack_server


def check(srv: ServerProcess, method: str, path: str, status: int, message: str | None, **kwargs) -> None:
    before = snapshot(srv)
    r = httpx.request(method, srv.url + path, **kwargs)
    assert r.status_code == status, r.text
    if message is not None:
        assert message in r.json()["error"], r.text
    assert snapshot(srv) == before


def create(srv: ServerProcess, body: dict, status: int, message: str) -> None:
    check(srv, "POST", "/api/create", status, message, json={"stream": True, **body})


# -- digests and blobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", ["sha256:abc", f"sha256:{HEX}0", f"sha512:{HEX}", "sha256:" + "z" * 64, f"{HEX}"])
def test_blob_digest_of_wrong_form(srv, digest):
    check(srv, "HEAD", f"/api/blobs/{digest}", 400, None)
    check(srv, "POST", f"/api/blobs/{digest}", 400, "invalid digest format", content=b"x")


@pytest.mark.parametrize("path", ["/api/blobs/sha256:..%2F..%2Fetc%2Fpasswd", "/api/blobs/sha256:../../x",
                                  "/api/blobs/..%2F..%2Fsha256-" + HEX])
def test_blob_digest_with_path_segments(srv, path):
    before = snapshot(srv)
    r = httpx.post(srv.url + path, content=b"owned")
    assert 400 <= r.status_code < 500
    assert snapshot(srv) == before


def test_blob_bytes_not_matching_digest(srv):
    check(srv, "POST", f"/api/blobs/sha256:{HEX}", 400, f'digest mismatch, expected "sha256:{HEX}", got "sha256:',
          content=b"other bytes")


def test_missing_blob(srv):
    check(srv, "HEAD", f"/api/blobs/sha256:{HEX}", 404, None)


# -- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/../b", "../../etc/passwd", "bad name", "x:../y", "-leading", "a/b/c/d/e", ""])
def test_invalid_names(srv, name):
    create(srv, {"model": name, "from": "base"}, 400, "invalid model name")
    if name:
        check(srv, "POST", "/api/show", 400, "invalid model name", json={"model": name})
        check(srv, "DELETE", "/api/delete", 400, f"name {json.dumps(name)} is invalid", json={"model": name})
        check(srv, "POST", "/api/copy", 400, f"destination {json.dumps(name)} is invalid",
              json={"source": "base", "destination": name})
        check(srv, "POST", "/api/copy", 400, f"source {json.dumps(name)} is invalid",
              json={"source": name, "destination": "ok"})
        create(srv, {"model": "ok", "from": name}, 400, "invalid model name")


def test_missing_names(srv):
    check(srv, "POST", "/api/show", 400, "model is required", json={})
    check(srv, "DELETE", "/api/delete", 400, "model is required", json={"model": ""})
    check(srv, "POST", "/api/show", 404, "model 'nope:latest' not found", json={"model": "nope"})
    check(srv, "DELETE", "/api/delete", 404, "model 'nope' not found", json={"model": "nope"})
    check(srv, "POST", "/api/copy", 404, 'model "nope" not found', json={"source": "nope", "destination": "x"})


# -- create ------------------------------------------------------------------------------------------------


def test_gguf_not_gguf(srv):
    create(srv, {"model": "x", "files": {"m.gguf": srv.digests["text"]}}, 400, "supplied file was not in GGUF format")


def test_gguf_magic_only(srv):
    """CVE-2024-39720: a 4-byte "GGUF" crashed Ollama; here it is a 400 naming the problem."""
    create(srv, {"model": "x", "files": {"m.gguf": srv.digests["magic"]}}, 400, "invalid GGUF file m.gguf: truncated")


def test_gguf_truncated(srv):
    """Ollama answers 500 (decode error); this is the client's file: 400."""
    create(srv, {"model": "x", "files": {"m.gguf": srv.digests["truncated"]}}, 400,
           "invalid GGUF file m.gguf: truncated GGUF file")


def test_files_naming_a_blob_never_uploaded(srv):
    """Ollama answers 500 (open: no such file); this server 400 naming the blob."""
    create(srv, {"model": "x", "files": {"m.gguf": f"sha256:{HEX}"}}, 400, f'blob "sha256:{HEX}" not found')


@pytest.mark.parametrize("digest", ["", "sha256:../../x", "sha256:abc"])
def test_files_with_bad_digest(srv, digest):
    create(srv, {"model": "x", "files": {"m.gguf": digest}}, 400, "invalid digest format")


@pytest.mark.parametrize("path", ["../m.gguf", "/abs/m.gguf", "a/../../m.gguf", "a//b.gguf"])
def test_files_path_must_be_relative(srv, path):
    create(srv, {"model": "x", "files": {path: srv.digests["tiny"]}}, 400, "file path must be relative")


def test_neither_from_nor_files(srv):
    create(srv, {"model": "x"}, 400, "neither 'from' or 'files' was specified")


def test_from_missing_model(srv):
    create(srv, {"model": "x", "from": "nope"}, 404, 'model "nope" not found, try pulling it first')


def test_from_model_whose_manifest_names_a_missing_blob(srv, tmp_path):
    config = '{"model_format":"gguf"}\n'.encode()
    cd = hashlib.sha256(config).hexdigest()
    (srv.models / "blobs" / f"sha256-{cd}").write_bytes(config)
    broken = srv.models / "manifests/registry.ollama.ai/library/broken"
    broken.mkdir(parents=True)
    (broken / "latest").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{cd}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{HEX}", "size": 10}],
    }))
    try:
        create(srv, {"model": "x", "from": "broken"}, 400, f"model 'broken:latest' is incomplete: blob \"sha256:{HEX}\"")
        check(srv, "POST", "/api/show", 404, f"names missing blob sha256:{HEX}", json={"model": "broken"})
    finally:
        (broken / "latest").unlink()
        broken.rmdir()


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"temprature": 0.5}, "unknown parameter 'temprature'"),
        ({"num_ctx": "big"}, 'option "num_ctx" must be of type integer'),
        ({"stop": "x"}, 'option "stop" must be of type array'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
    ],
)
def test_bad_parameters(srv, parameters, message):
    create(srv, {"model": "x", "from": "base", "parameters": parameters}, 400, message)


def test_unknown_parameter_in_modelfile(srv):
    create(srv, {"model": "x", "modelfile": "FROM base\nPARAMETER temprature 0.5"}, 400, "unknown parameter 'temprature'")


@pytest.mark.parametrize(
    "modelfile, message",
    [
        ("FROM base\nBOGUS x", "(line 2): command must be one of"),
        ("SYSTEM hi", "no FROM line"),
        ('FROM base\nSYSTEM """unterminated', "unexpected EOF"),
        ("FROM base\nMESSAGE robot hi", "message role must be one of"),
        ("FROM ./model.gguf", "(line 1)"),
        (f"FROM /etc/passwd", "(line 1)"),
        ("FROM base\nADAPTER ./lora.gguf", "ADAPTER ./lora.gguf"),
    ],
)
def test_modelfile_errors(srv, modelfile, message):
    create(srv, {"model": "x", "modelfile": modelfile}, 400, message)


def test_path_field_is_never_read(srv):
    """CVE-2024-39719/39721: the legacy `path` field opened server files; it is refused here."""
    create(srv, {"model": "x", "path": "/dev/random"}, 400, "'path' field is not supported")


def test_only_one_adapter(srv):
    create(srv, {"model": "x", "from": "base", "adapters": {"a.gguf": srv.digests["tiny"], "b.gguf": srv.digests["tiny"]}},
           400, "only one adapter is currently supported")


def test_quantize_is_refused_not_ignored(srv):
    create(srv, {"model": "x", "from": "base", "quantize": "q4_K_M"}, 400, "quantization is not supported")


# -- bodies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("POST", "/api/create"), ("POST", "/api/show"),
                                          ("POST", "/api/copy"), ("DELETE", "/api/delete")])
@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "missing request body"),
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "cannot unmarshal array"),
        (b'{"model": NaN}', "invalid"),
        (b"[" * 100_000, "invalid JSON"),
        (b'{"model": 42, "source": 1, "destination": [], "stream": "yes"}', "invalid value"),
        (b"\xff\xfe", "invalid"),
    ],
)
def test_malformed_bodies(srv, method, path, content, message):
    check(srv, method, path, 400, message, content=content, headers={"content-type": "application/json"})


def test_wrong_field_types_in_create(srv):
    create(srv, {"model": "x", "from": "base", "files": ["a"]}, 400, "invalid value for CreateRequest.files")
    create(srv, {"model": "x", "from": "base", "parameters": [1]}, 400, "invalid value for CreateRequest.parameters")
    create(srv, {"model": "x", "from": "base", "messages": [{"role": 1}]}, 400, "messages must be objects")


def test_oversized_json_body(srv):
    huge = b'{"model": "' + b"x" * (33 << 20) + b'"}'
    check(srv, "POST", "/api/show", 413, "request body larger than", content=huge)


def test_template_that_does_not_parse(srv):
    create(srv, {"model": "x", "from": "base", "template": "{{ .Prompt"}, 400, "template error: ")
    create(srv, {"model": "x", "modelfile": "FROM base\nTEMPLATE {{ if .System }}"}, 400, "template error: ")


def test_create_target_pinned_to_a_digest(srv):
    create(srv, {"model": f"x@sha256:{HEX}", "from": "base"}, 400, "invalid model name")


def test_show_overrides_do_not_write(srv):
    before = snapshot(srv)
    body = httpx.post(f"{srv.url}/api/show", json={"model": "base", "system": "override", "options": {"top_k": 7}}).json()
    assert body["system"] == "override" and "SYSTEM override" in body["modelfile"]
    assert "PARAMETER top_k 7" in body["modelfile"] and "top_k" not in body.get("parameters", "")
    assert snapshot(srv) == before
