"""Pull and push over real uvicorn servers on loopback, with faults injected by a proxy.

Each server is `tests.support.registry_server.ThreadServer` (the registry and pull/push
routers over a store directory); `FaultProxy` sits between a puller and a registry.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from server.manifest import MEDIA_MANIFEST, digest_of
from server.registry import pull as pull_mod
from tests.support.faultproxy import Cut, FaultProxy, Garbage, Hold, Respond
from tests.support.models import manifest_bytes, put_blob, put_model, store_files
from tests.support.registry_server import ThreadServer

MODEL_BYTES = bytes(range(256)) * 4096  # 1 MiB: several proxy reads, so a cut lands mid-blob


def call(server: ThreadServer, path: str, body: dict) -> tuple[int, list[dict]]:
    """POST and return (status, every NDJSON object)."""
    with httpx.Client(timeout=60) as client:
        r = client.post(server.url + path, json=body)
    lines = [json.loads(ln) for ln in r.text.splitlines() if ln.strip()]
    return r.status_code, lines


def statuses(lines: list[dict]) -> list[str]:
    out: list[str] = []
    for obj in lines:
        s = obj.get("status") or "error: " + obj.get("error", "")
        if not out or out[-1] != s:
            out.append(s)
    return out


@pytest.fixture
def registry(tmp_path: Path):
    """Server B holding team/bot:v2 (as `team/bot:v2`, i.e. host registry.ollama.ai)."""
    models = tmp_path / "b"
    raw = put_model(models, "registry.ollama.ai/team/bot/v2", MODEL_BYTES)
    with ThreadServer(models) as b:
        b.manifest = raw
        yield b


@pytest.fixture
def puller(tmp_path: Path):
    with ThreadServer(tmp_path / "c") as c:
        yield c


def test_pull_writes_blobs_and_the_manifest_byte_for_byte(registry, puller):
    status, lines = call(puller, "/api/pull", {"model": f"{registry.host}/team/bot:v2", "insecure": True})
    assert status == 200
    m = json.loads(registry.manifest)
    model_digest = m["layers"][0]["digest"]
    assert statuses(lines) == [
        "pulling manifest",
        f"pulling {model_digest[7:19]}",
        f"pulling {m['layers'][1]['digest'][7:19]}",
        f"pulling {m['config']['digest'][7:19]}",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    last_model = [o for o in lines if o.get("digest") == model_digest][-1]
    assert last_model["total"] == last_model["completed"] == len(MODEL_BYTES)
    stored = puller.models / "manifests" / registry.host / "team" / "bot" / "v2"
    assert stored.read_bytes() == registry.manifest
    for d in [*m["layers"], m["config"]]:
        blob = puller.models / "blobs" / d["digest"].replace(":", "-")
        assert digest_of(blob.read_bytes()) == d["digest"]
    assert not list((puller.models / "blobs").glob("*-partial"))

    # A second pull finds every blob present and downloads nothing.
    with FaultProxy(registry.port) as proxy:
        status, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"status": "success"}
        assert proxy.requests("GET", "/blobs/") == []


def test_pull_without_stream_answers_the_last_status(registry, puller):
    status, lines = call(
        puller, "/api/pull", {"model": f"{registry.host}/team/bot:v2", "insecure": True, "stream": False}
    )
    assert (status, lines) == (200, [{"status": "success"}])


def test_pull_by_digest_checks_the_manifest_digest(registry, puller):
    good = digest_of(registry.manifest)
    bad = "sha256:" + "0" * 64
    before = store_files(puller.models)
    status, lines = call(puller, "/api/pull", {"model": f"{registry.host}/team/bot:v2@{bad}", "insecure": True})
    assert lines[-1]["error"].startswith("pull model manifest: ")
    assert store_files(puller.models) == before

    status, lines = call(puller, "/api/pull", {"model": f"{registry.host}/team/bot:v2@{good}", "insecure": True})
    assert lines[-1] == {"status": "success"}
    stored = puller.models / "manifests" / registry.host / "team" / "bot" / "v2"
    assert digest_of(stored.read_bytes()) == good


def test_a_registry_serving_a_manifest_that_differs_from_the_pinned_digest_is_refused(registry, puller):
    other = registry.manifest.replace(b"\n", b" \n")
    pinned = digest_of(registry.manifest)
    with FaultProxy(registry.port) as proxy:
        proxy.add(lambda s: "/manifests/" in s.path, Respond(200, other, {"Content-Type": MEDIA_MANIFEST}))
        before = store_files(puller.models)
        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2@{pinned}", "insecure": True})
    assert lines[-1]["error"] == (
        f"pull model manifest: manifest digest mismatch: want {pinned}, got {digest_of(other)}"
    )
    assert store_files(puller.models) == before


def test_missing_model_is_ollamas_file_does_not_exist(registry, puller):
    _, lines = call(puller, "/api/pull", {"model": f"{registry.host}/team/nope:v2", "insecure": True})
    assert lines == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    status, lines = call(
        puller, "/api/pull", {"model": f"{registry.host}/team/nope:v2", "insecure": True, "stream": False}
    )
    assert (status, lines) == (404, [{"error": "pull model manifest: file does not exist"}])
    assert store_files(puller.models) == {}


@pytest.mark.parametrize(
    "action, message",
    [
        (Respond(500, b"boom"), "pull model manifest: 500: boom"),
        (Respond(403, b'{"errors":[{"code":"DENIED","message":"no access"}]}'), "pull model manifest: 403: no access"),
        (Respond(200, b"{not json"), "pull model manifest: invalid manifest: not JSON (JSONDecodeError)"),
        (Respond(200, b'{"schemaVersion":1}'), "pull model manifest: invalid manifest: schemaVersion must be 2"),
        (Respond(200, b"x", {"Content-Encoding": "gzip"}),
         "pull model manifest: registry answered with an unsupported content encoding 'gzip'"),
        (Respond(200, b" " * (4 * 1024 * 1024 + 1)),
         "pull model manifest: manifest too large: more than 4194304 bytes"),
        (Respond(200, b"{}", {"Docker-Content-Digest": "sha256:" + "0" * 64}),
         "pull model manifest: manifest digest mismatch: registry announced sha256:" + "0" * 64
         + ", got " + digest_of(b"{}")),
    ],
    ids=["500", "403-docker-error", "not-json", "schema-1", "gzip", "oversize", "announced-digest"],
)
def test_bad_manifest_answers_fail_cleanly(registry, puller, action, message, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    with FaultProxy(registry.port) as proxy:
        proxy.add(lambda s: "/manifests/" in s.path, action, times=99)
        status, lines = call(
            puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True, "stream": False}
        )
    assert (status, lines) == (502, [{"error": message}])
    assert store_files(puller.models) == {}


def test_garbage_instead_of_http_fails_cleanly(registry, puller, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    with FaultProxy(registry.port) as proxy:
        proxy.add(lambda s: True, Garbage(), times=99)
        status, lines = call(
            puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True, "stream": False}
        )
    assert status == 502
    assert lines[0]["error"].startswith("pull model manifest: RemoteProtocolError")
    assert store_files(puller.models) == {}


def test_layer_digest_with_path_segments_is_refused_before_any_write(registry, puller, tmp_path):
    m = json.loads(registry.manifest)
    traversal = "../../../../canary"
    evil = manifest_bytes(m["config"], [{**m["layers"][0], "digest": traversal}])
    canary = tmp_path / "canary"
    canary.write_text("keep")
    with FaultProxy(registry.port) as proxy:
        proxy.add(lambda s: "/manifests/" in s.path, Respond(200, evil))
        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert proxy.requests("GET", "/blobs/") == []
    assert lines[-1] == {"error": f"pull model manifest: invalid manifest: layer 0 has an invalid digest {traversal!r}"}
    assert canary.read_text() == "keep"
    assert store_files(puller.models) == {}


def test_blob_whose_bytes_do_not_hash_to_its_digest_is_never_stored(registry, puller):
    m = json.loads(registry.manifest)
    d = m["layers"][0]["digest"]
    (registry.models / "blobs" / d.replace(":", "-")).write_bytes(MODEL_BYTES[::-1])  # same size, other bytes
    _, lines = call(puller, "/api/pull", {"model": f"{registry.host}/team/bot:v2", "insecure": True})
    assert lines[-1]["error"].startswith(f"digest mismatch, file must be downloaded again: want {d}, got sha256:")
    files = store_files(puller.models)
    assert not [f for f in files if f.startswith("manifests")]
    assert f"blobs/{d.replace(':', '-')}" not in files
    assert not [f for f in files if f.endswith("-partial")]


def test_blob_longer_than_declared_is_cut_off_and_refused(registry, puller):
    m = json.loads(registry.manifest)
    d = m["layers"][0]["digest"]
    (registry.models / "blobs" / d.replace(":", "-")).write_bytes(MODEL_BYTES + b"more")
    _, lines = call(puller, "/api/pull", {"model": f"{registry.host}/team/bot:v2", "insecure": True})
    assert lines[-1] == {"error": f"blob {d} is larger than the {len(MODEL_BYTES)} bytes its manifest declares"}
    assert not [f for f in store_files(puller.models) if f.startswith("manifests") or d[7:] in f]


def test_blob_404_and_500_fail_cleanly(registry, puller, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    for action, message in [
        (Respond(404), "file does not exist: blob "),
        (Respond(500, b"disk on fire"), "500: disk on fire"),
    ]:
        with FaultProxy(registry.port) as proxy:
            proxy.add(lambda s: "/blobs/" in s.path, action, times=99)
            _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1]["error"].startswith(message)
        assert not [f for f in store_files(puller.models) if f.startswith("manifests")]


def test_a_cut_connection_is_resumed_with_range(registry, puller, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    d = json.loads(registry.manifest)["layers"][0]["digest"]
    with FaultProxy(registry.port) as proxy:
        # More cuts than MAX_ATTEMPTS, each after new bytes: progress resets the count.
        proxy.add(lambda s: s.method == "GET" and d in s.path, Cut(after=100_000), times=pull_mod.MAX_ATTEMPTS + 2)
        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        gets = proxy.requests("GET", d)
    assert lines[-1] == {"status": "success"}
    assert len(gets) == pull_mod.MAX_ATTEMPTS + 3
    assert "range" not in gets[0].headers
    starts = [int(g.headers["range"].removeprefix("bytes=").rstrip("-")) for g in gets[1:]]
    assert starts == sorted(starts) and 0 < starts[0] <= 100_000
    blob = puller.models / "blobs" / d.replace(":", "-")
    assert blob.read_bytes() == MODEL_BYTES


def test_a_pull_that_keeps_being_cut_fails_cleanly_and_the_next_pull_resumes(registry, puller, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    d = json.loads(registry.manifest)["layers"][0]["digest"]
    with FaultProxy(registry.port) as proxy:
        # One cut after 100 000 bytes, then connections that break before a byte arrives.
        proxy.add(lambda s: s.method == "GET" and d in s.path, Cut(after=100_000))
        proxy.add(lambda s: s.method == "GET" and d in s.path, Cut(after=0), times=pull_mod.MAX_ATTEMPTS)
        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1]["error"].startswith(
            f"download of {d} failed after {pull_mod.MAX_ATTEMPTS} attempts without progress"
        )
        files = store_files(puller.models)
        assert not [f for f in files if f.startswith("manifests")]
        assert f"blobs/{d.replace(':', '-')}" not in files
        partial = puller.models / "blobs" / (d.replace(":", "-") + "-partial")
        kept = partial.stat().st_size
        assert 0 < kept <= 100_000

        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"status": "success"}
        last = proxy.requests("GET", d)[-1]
        assert last.headers["range"] == f"bytes={kept}-"
    assert (puller.models / "blobs" / d.replace(":", "-")).read_bytes() == MODEL_BYTES
    assert not partial.exists()


def test_two_pulls_of_one_blob_at_once_download_it_once(registry, tmp_path):
    d = json.loads(registry.manifest)["layers"][0]["digest"]
    release = threading.Event()
    results: dict[str, list[dict]] = {}
    with ThreadServer(tmp_path / "c") as c, FaultProxy(registry.port) as proxy:
        proxy.add(lambda s: s.method == "GET" and d in s.path, Hold(after=200_000, event=release))
        name = f"{proxy.host}/team/bot:v2"

        def run(key: str, model: str) -> None:
            results[key] = call(c, "/api/pull", {"model": model, "insecure": True})[1]

        first = threading.Thread(target=run, args=("first", name))
        first.start()
        for _ in range(1000):  # bounded: until the first download is under way
            if proxy.requests("GET", d):
                break
            time.sleep(0.01)
        with httpx.Client(timeout=60) as client, client.stream(
            "POST", c.url + "/api/pull", json={"model": name, "insecure": True}
        ) as r:
            seen_pulling = False
            for line in r.iter_lines():
                obj = json.loads(line)
                if obj.get("digest") == d and not seen_pulling:
                    seen_pulling = True
                    release.set()  # the second pull is waiting on the download: let it finish
            results["second"] = [obj]
        first.join(timeout=60)
        assert results["first"][-1] == {"status": "success"}
        assert results["second"][-1] == {"status": "success"}
        assert len(proxy.requests("GET", d)) == 1


def test_pulling_a_new_version_removes_the_layers_only_the_old_one_used(registry, puller):
    name = {"model": f"{registry.host}/team/bot:v2", "insecure": True}
    assert call(puller, "/api/pull", name)[1][-1] == {"status": "success"}
    old_model = json.loads(registry.manifest)["layers"][0]["digest"]
    put_model(registry.models, "registry.ollama.ai/team/bot/v2", MODEL_BYTES[::-1])  # v2 retagged
    _, lines = call(puller, "/api/pull", name)
    assert statuses(lines)[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert not (puller.models / "blobs" / old_model.replace(":", "-")).exists()


def test_duplicate_digests_and_empty_blobs(registry, puller, tmp_path):
    """A config that is also a layer is fetched and verified once; a zero-byte blob needs no request."""
    models = tmp_path / "odd"
    empty = {"mediaType": "application/vnd.ollama.image.license", **put_blob(models, b"")}
    weights = {"mediaType": "application/vnd.ollama.image.model", **put_blob(models, MODEL_BYTES)}
    raw = manifest_bytes({**weights, "mediaType": "application/vnd.docker.container.image.v1+json"}, [weights, empty])
    path = models / "manifests/registry.ollama.ai/team/odd/latest"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)
    with ThreadServer(models) as odd, FaultProxy(odd.port) as proxy:
        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/odd", "insecure": True})
        assert lines[-1] == {"status": "success"}
        assert len(proxy.requests("GET", "/blobs/")) == 1
    assert (puller.models / "blobs" / empty["digest"].replace(":", "-")).read_bytes() == b""
    from server.store import Store

    assert Store(puller.models).verify() == []


def test_redirects_are_followed_only_on_the_same_host(registry, puller, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    d = json.loads(registry.manifest)["layers"][0]["digest"]
    with FaultProxy(registry.port) as proxy:
        # Same host: followed (a registry may move blobs to another path).
        proxy.add(lambda s: s.path.endswith(d), Respond(307, b"", {"Location": f"/v2/team/bot/blobs/{d}?moved=1"}))
        _, lines = call(puller, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"status": "success"}
        assert proxy.requests("GET", "moved=1")
    with ThreadServer(puller.models.parent / "c2") as c2, FaultProxy(registry.port) as proxy:
        # Another host (here: another port): refused, nothing fetched from it, nothing stored.
        proxy.add(lambda s: s.path.endswith(d), Respond(307, b"", {"Location": f"http://127.0.0.1:{registry.port}/x"}))
        _, lines = call(c2, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"error": f"registry redirected to another host: http://127.0.0.1:{registry.port}/x"}
        assert not [f for f in store_files(c2.models) if f.startswith("manifests/")]


def test_a_client_that_goes_away_stops_the_download_and_a_later_pull_resumes(registry, puller):
    d = json.loads(registry.manifest)["layers"][0]["digest"]
    release = threading.Event()
    blob = puller.models / "blobs" / d.replace(":", "-")
    partial = blob.with_name(blob.name + "-partial")
    with FaultProxy(registry.port) as proxy:
        proxy.add(lambda s: s.method == "GET" and d in s.path, Hold(after=300_000, event=release))
        name = {"model": f"{proxy.host}/team/bot:v2", "insecure": True}
        with httpx.Client(timeout=60) as client, client.stream("POST", puller.url + "/api/pull", json=name) as r:
            for line in r.iter_lines():
                if json.loads(line).get("completed"):
                    break  # bytes are arriving: hang up
        for _ in range(1000):  # bounded: until the server has dropped the download
            if not pull_mod._downloads:
                break
            time.sleep(0.01)
        assert not pull_mod._downloads
        release.set()
        assert not blob.exists() and 0 < partial.stat().st_size <= 300_000
        assert not [f for f in store_files(puller.models) if f.startswith("manifests/")]

        _, lines = call(puller, "/api/pull", name)
        assert lines[-1] == {"status": "success"}
        assert proxy.requests("GET", d)[-1].headers["range"].startswith("bytes=")
    assert blob.read_bytes() == MODEL_BYTES and not partial.exists()
