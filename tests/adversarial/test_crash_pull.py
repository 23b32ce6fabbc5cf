"""Kill -9 a pulling `stack serve` mid-download and mid-manifest-write, and a deleting one mid-prune.

Server B holds a model; server A pulls it from B (through the fault proxy, so the test can hold a
blob's body half-way). After each kill, `stack fsck` finds A's store sound (invisible leftovers at
most: a `-partial` download), and after a restart the interrupted pull succeeds (resuming the
partial blob) or the model is deleted cleanly. Named points use the test-only failpoints of
`tests/support/failpoints/sitecustomize.py` (no server code): a pull of a model with k new blobs
renames k downloads into place, then its manifest (rename k+1); a delete unlinks the manifest,
then prunes each unshared blob.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from server.fsck import fsck
from tests.adversarial.test_crash_consistency import FAILPOINTS
from tests.support.faultproxy import FaultProxy, Hold
from tests.support.server import ServerProcess, start_server
from tests.test_registry_e2e import create

FAIL_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAILPOINTS), os.environ.get("PYTHONPATH", "")]))}


def pull(srv: ServerProcess, name: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/api/pull", json={"model": name, "insecure": True, "stream": False}, timeout=120)


def models_of(srv: ServerProcess) -> set[str]:
    return {m["name"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}


def assert_sound(models: Path, when: str) -> None:
    report = fsck(models)
    assert report.clean, (when, report.errors)


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_gguf):
    with start_server(tmp_path_factory.mktemp("b")) as b:
        create(b, "team/bot:latest", tiny_gguf, system="pulled after a crash")
        manifest = httpx.get(f"{b.url}/v2/team/bot/manifests/latest").json()
        blobs = [manifest["config"], *manifest["layers"]]
        with FaultProxy(b.port) as proxy:
            yield proxy, blobs


def test_kill_mid_download_then_the_pull_resumes(tmp_path, source, tiny_gguf):
    proxy, _ = source
    weights = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    half = tiny_gguf.stat().st_size // 2
    release = threading.Event()
    proxy.add(lambda s: s.method == "GET" and weights in s.path, Hold(half, release))
    name = f"{proxy.host}/team/bot:latest"
    models = tmp_path / "a"
    partial = models / "blobs" / ("sha256-" + weights.removeprefix("sha256:") + "-partial")
    try:
        with start_server(models) as a:
            puller = threading.Thread(target=lambda: _swallow(lambda: pull(a, name)), daemon=True)
            puller.start()
            for _ in range(1200):  # until part of the blob is on disk (writes are buffered; bounded: 60 s)
                if partial.exists() and partial.stat().st_size > 0:
                    break
                time.sleep(0.05)
            assert partial.exists() and 0 < partial.stat().st_size <= half, "the download never reached the hold"
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(timeout=30)
            puller.join(30)
    finally:
        release.set()
    assert_sound(models, "mid-download")
    assert partial.exists()  # an invisible leftover, kept for a resume
    with start_server(models) as a:
        assert name not in models_of(a)
        r = pull(a, name)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        assert name in models_of(a)
        ranged = [s for s in proxy.requests("GET", weights) if "range" in {k.lower() for k in s.headers}]
        assert ranged, "the second pull resumed the partial blob with Range"
    assert not partial.exists()
    assert_sound(models, "after the re-run")


def _swallow(call) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass  # the server was killed under the request


@pytest.mark.parametrize("when", ["before", "after"])
def test_kill_at_the_manifest_rename_of_a_pull(tmp_path, source, when):
    proxy, blobs = source
    name = f"{proxy.host}/team/bot:latest"
    models = tmp_path / "a"
    point = f"{when}:replace:{len(blobs) + 1}"  # every blob renamed into place, then the manifest
    with start_server(models, env={**FAIL_ENV, "CORRAL_KILL_AT": point}) as a:
        _swallow(lambda: pull(a, name))
        a.proc.wait(timeout=30)
        assert a.proc.returncode == -signal.SIGKILL, f"{point} never reached"
    assert_sound(models, point)
    with start_server(models) as a:
        assert (name in models_of(a)) == (when == "after")  # the kill fell at the manifest's rename
        r = pull(a, name)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        assert name in models_of(a)
        show = httpx.post(f"{a.url}/api/show", json={"model": name})
        assert show.status_code == 200 and show.json()["system"] == "pulled after a crash"
    assert_sound(models, f"{point}, after the re-run")


def test_kill_mid_prune_of_a_delete(tmp_path, source):
    proxy, blobs = source
    name = f"{proxy.host}/team/bot:latest"
    models = tmp_path / "a"
    with start_server(models) as a:
        assert pull(a, name).status_code == 200
    # unlink 1 is the manifest, 2 the first pruned blob: die with the rest of the prune undone
    with start_server(models, env={**FAIL_ENV, "CORRAL_KILL_AT": "after:unlink:2"}) as a:
        _swallow(lambda: httpx.request("DELETE", f"{a.url}/api/delete", json={"model": name}, timeout=30))
        a.proc.wait(timeout=30)
        assert a.proc.returncode == -signal.SIGKILL, "the prune never started"
    assert_sound(models, "mid-prune")
    left = [p for p in (models / "blobs").iterdir() if not p.name.endswith("-partial")]
    assert 0 < len(left) < len(blobs)  # the prune was cut half-way
    with start_server(models) as a:
        assert name not in models_of(a)  # the delete took effect
        r = pull(a, name)  # and the model comes back whole
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        assert httpx.request("DELETE", f"{a.url}/api/delete", json={"model": name}).status_code == 200
    assert_sound(models, "after the re-run")
    assert fsck(models).unreferenced == 0
