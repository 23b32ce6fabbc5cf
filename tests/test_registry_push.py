"""Push from one store to another server's registry, and the /v2/ endpoints that receive it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from server.manifest import MEDIA_MANIFEST, digest_of
from server.registry import push as push_mod
from tests.support.faultproxy import FaultProxy
from tests.support.models import manifest_bytes, put_model, store_files
from tests.support.registry_server import ThreadServer
from tests.test_registry_protocol import call, statuses

MODEL_BYTES = bytes(range(251)) * 5000


@pytest.fixture
def source(tmp_path: Path):
    """Server A with `team/bot:v2` stored under the name it will be pushed as."""
    models = tmp_path / "a"
    with ThreadServer(models) as a:
        yield a


def test_push_then_pull_round_trip(source, tmp_path, monkeypatch):
    monkeypatch.setattr(push_mod, "PATCH_CHUNK", 100_000)  # several PATCHes per blob
    with ThreadServer(tmp_path / "b") as b, ThreadServer(tmp_path / "c") as c, FaultProxy(b.port) as proxy:
        raw = put_model(source.models, f"{proxy.host}/team/bot/v2", MODEL_BYTES)
        status, lines = call(source, "/api/push", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        m = json.loads(raw)
        assert statuses(lines) == [
            "retrieving manifest",
            *[f"pushing {d['digest'][7:19]}" for d in [*m["layers"], m["config"]]],
            "pushing manifest",
            "success",
        ]
        patches = proxy.requests("PATCH")
        assert len(patches) == -(-len(MODEL_BYTES) // 100_000) + 2  # the model in chunks, template, config
        assert patches[1].headers["content-range"] == "100000-199999"

        # B stores it as team/bot:v2, byte for byte.
        assert (b.models / "manifests/registry.ollama.ai/team/bot/v2").read_bytes() == raw
        # Pushing again uploads nothing: every HEAD finds its blob.
        n = len(proxy.requests("PATCH"))
        _, lines = call(source, "/api/push", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"status": "success"}
        assert len(proxy.requests("PATCH")) == n

        _, lines = call(c, "/api/pull", {"model": f"{b.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"status": "success"}
        assert (c.models / f"manifests/{b.host}/team/bot/v2").read_bytes() == raw
        assert digest_of(raw) == digest_of((b.models / "manifests/registry.ollama.ai/team/bot/v2").read_bytes())


def test_push_of_a_missing_model(source):
    status, lines = call(source, "/api/push", {"model": "127.0.0.1:9/team/none:v1", "insecure": True})
    assert lines == [
        {"status": "retrieving manifest"},
        {"status": "couldn't retrieve manifest"},
        {"error": "model '127.0.0.1:9/team/none:v1' not found"},
    ]
    status, lines = call(source, "/api/push", {"model": "127.0.0.1:9/team/none:v1", "stream": False})
    assert (status, lines) == (404, [{"error": "model '127.0.0.1:9/team/none:v1' not found"}])


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "model is required"),
        ({"model": "a/b/c/d/e"}, "invalid model name"),
        ({"model": "x", "insecure": "yes"}, "insecure and stream must be true or false"),
    ],
)
def test_bad_requests_are_400(source, body, message):
    for path in ("/api/pull", "/api/push"):
        assert call(source, path, body) == (400, [{"error": message}])


def test_http_name_needs_insecure(source):
    status, lines = call(source, "/api/pull", {"model": "http://127.0.0.1:9/team/x:v1", "stream": False})
    assert (status, lines) == (400, [{"error": "insecure protocol http"}])


def test_push_disabled_answers_403_and_changes_nothing(source, tmp_path):
    with ThreadServer(tmp_path / "b", push=False) as b:
        put_model(source.models, f"{b.host}/team/bot/v2", MODEL_BYTES)
        status, lines = call(source, "/api/push", {"model": f"{b.host}/team/bot:v2", "insecure": True, "stream": False})
        assert status == 502
        assert lines == [{"error": "403: pushing to this server is disabled (CORRAL_REGISTRY_PUSH=0)"}]
        assert store_files(b.models) == {}


# -- the /v2/ endpoints directly ----------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path):
    with ThreadServer(tmp_path / "r") as r, httpx.Client(base_url=r.url, timeout=30) as http:
        r.http = http
        yield r


def _upload(http: httpx.Client, data: bytes, digest: str) -> httpx.Response:
    r = http.post("/v2/team/bot/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["location"]
    assert location.startswith(str(http.base_url).rstrip("/") + "/v2/team/bot/blobs/uploads/")  # absolute, for Ollama
    r = http.patch(location, content=data, headers={"Content-Range": f"0-{len(data) - 1}"})
    assert r.status_code == 202 and r.headers["range"] == f"0-{len(data) - 1}"
    return http.put(r.headers["location"], params={"digest": digest})


def test_v2_base_and_blob_ranges(registry):
    http = registry.http
    assert http.get("/v2/").status_code == 200
    data = b"0123456789" * 100
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http.head(f"/v2/team/bot/blobs/{d}").status_code == 404
    r = _upload(http, data, d)
    assert r.status_code == 201 and r.headers["docker-content-digest"] == d
    # What Ollama's own client needs: a Location on the blob (its source for ranged GETs).
    assert http.get(f"/v2/team/bot/blobs/{d}").headers["location"] == f"/v2/team/bot/blobs/{d}"
    r = http.get(f"/v2/team/bot/blobs/{d}", headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.content, r.headers["content-range"]) == (206, b"0123456789", "bytes 10-19/1000")
    r = http.head(f"/v2/team/bot/blobs/{d}")
    assert (r.status_code, r.headers["content-length"]) == (200, "1000")
    # A mount of a blob the server has is a 201 without any upload.
    r = http.post("/v2/other/repo/blobs/uploads/", params={"mount": d, "from": "team/bot"})
    assert r.status_code == 201


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256-" + "a" * 64, "sha256:abc", "..%2F..%2Fetc%2Fpasswd"])
def test_v2_bad_digests_are_400(registry, digest):
    r = registry.http.get(f"/v2/team/bot/blobs/{digest}")
    assert r.status_code in (400, 404)
    if r.status_code == 400:
        assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_v2_upload_with_wrong_digest_stores_nothing(registry):
    data = b"payload"
    wrong = "sha256:" + "1" * 64
    r = _upload(registry.http, data, wrong)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert [f for f in store_files(registry.models) if not f.startswith("blobs/.uploads")] == []
    assert store_files(registry.models) == {}


def test_v2_patch_at_the_wrong_offset_is_416(registry):
    r = registry.http.post("/v2/team/bot/blobs/uploads/")
    r = registry.http.patch(r.headers["location"], content=b"abc", headers={"Content-Range": "5-7"})
    assert r.status_code == 416


def test_v2_manifest_put_checks_blobs_size_and_json(registry):
    http = registry.http
    data = b"{}"
    cfg = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest_of(data), "size": 2}
    good = manifest_bytes(cfg, [])
    headers = {"Content-Type": MEDIA_MANIFEST}
    r = http.put("/v2/team/bot/manifests/v1", content=good, headers=headers)
    assert (r.status_code, r.json()["errors"][0]["code"]) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert _upload(http, data, digest_of(data)).status_code == 201
    lying = manifest_bytes({**cfg, "size": 3}, [])
    r = http.put("/v2/team/bot/manifests/v1", content=lying, headers=headers)
    assert (r.status_code, r.json()["errors"][0]["code"]) == (400, "SIZE_INVALID")
    r = http.put("/v2/team/bot/manifests/v1", content=b"[1,2", headers=headers)
    assert (r.status_code, r.json()["errors"][0]["code"]) == (400, "MANIFEST_INVALID")
    r = http.put("/v2/team/bot/manifests/v1", content=b" " * (4 * 1024 * 1024 + 1), headers=headers)
    assert r.status_code == 413
    evil = manifest_bytes(cfg, [{"mediaType": "x", "digest": "sha256:../../../etc/passwd", "size": 1}])
    r = http.put("/v2/team/bot/manifests/v1", content=evil, headers=headers)
    assert (r.status_code, r.json()["errors"][0]["code"]) == (400, "MANIFEST_INVALID")
    assert not [f for f in store_files(registry.models) if f.startswith("manifests/")]

    r = http.put("/v2/team/bot/manifests/v1", content=good, headers=headers)
    assert r.status_code == 201 and r.headers["docker-content-digest"] == digest_of(good)
    r = http.get("/v2/team/bot/manifests/v1")
    assert (r.content, r.headers["content-type"]) == (good, MEDIA_MANIFEST)
    r = http.get(f"/v2/team/bot/manifests/{digest_of(good)}")
    assert r.content == good
    assert http.get("/v2/team/bot/manifests/sha256:" + "0" * 64).status_code == 404
    assert http.get("/v2/team/bot/manifests/nope").json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert http.put("/v2/team/bot/manifests/..", content=good, headers=headers).status_code in (400, 404)


def test_the_official_ollama_client_pulls_and_pushes(source, tmp_path):
    import ollama

    with ThreadServer(tmp_path / "b") as b:
        raw = put_model(source.models, f"{b.host}/team/bot/v2", MODEL_BYTES)
        client = ollama.Client(host=source.url)
        pushed = [p.status for p in client.push(f"{b.host}/team/bot:v2", insecure=True, stream=True)]
        assert pushed[0] == "retrieving manifest" and pushed[-1] == "success"
        with ThreadServer(tmp_path / "c") as c:
            progress = list(ollama.Client(host=c.url).pull(f"{b.host}/team/bot:v2", insecure=True, stream=True))
            assert progress[-1].status == "success"
            model = [p for p in progress if p.digest == json.loads(raw)["layers"][0]["digest"]][-1]
            assert model.total == model.completed == len(MODEL_BYTES)
            assert ollama.Client(host=c.url).pull(f"{b.host}/team/bot:v2", insecure=True).status == "success"
            with pytest.raises(ollama.ResponseError) as err:
                ollama.Client(host=c.url).pull(f"{b.host}/team/none:v2", insecure=True)
            assert err.value.error == "pull model manifest: file does not exist"


@pytest.mark.parametrize(
    "value, enabled",
    [(None, True), ("", True), ("1", True), ("true", True), ("0", False), ("false", False), ("'0'", False)],
)
def test_corral_registry_push_variable(value, enabled):
    from server.config import Config, describe

    env = {} if value is None else {"CORRAL_REGISTRY_PUSH": value}
    assert Config.from_env(env).registry_push is enabled
    assert "CORRAL_REGISTRY_PUSH" in dict(describe())
