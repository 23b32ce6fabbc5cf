"""`stack fsck` on a store written by a real `stack serve`, and `stack doctor` against real servers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import ollama
import pytest

from tests.support.cli import run_stack
from tests.support.server import free_port, start_server
from toolchain import keys as kf
from toolchain.doctor import Check, disk_check


def stack(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_stack(*args, env=env)


def make_store(tmp_path: Path, tiny_gguf: Path) -> Path:
    models = tmp_path / "models"
    with start_server(models) as srv:
        client = ollama.Client(host=srv.url)
        digest = client.create_blob(tiny_gguf)
        client.create(model="tiny", files={"tiny.gguf": digest}, system="be brief")
        client.copy("tiny", "other/tiny:v2")
    return models


def test_fsck_clean_store(tmp_path, tiny_gguf):
    models = make_store(tmp_path, tiny_gguf)
    r = stack("fsck", "--models", str(models))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{models}: 2 manifests, 3 blobs (0 unreferenced), 0 leftovers: clean"
    r = stack("fsck", "--format", "json", env={"OLLAMA_MODELS": str(models)})
    report = json.loads(r.stdout)
    assert (report["clean"], report["manifests"], report["blobs"], report["errors"]) == (True, 2, 3, [])


def test_serve_start_up_removes_stale_partials_and_keeps_fresh_ones(tmp_path, tiny_gguf):
    models = make_store(tmp_path, tiny_gguf)
    blobs = models / "blobs"
    stale = [blobs / ("sha256-" + "c" * 64 + "-partial"), blobs / ("sha256-" + "d" * 64 + "-partial-0")]
    fresh = blobs / ("sha256-" + "e" * 64 + "-partial")  # a recent crash's download, to be resumed
    for path in stale + [fresh]:
        path.write_bytes(b"half")
    old = time.time() - 7200
    for path in stale:
        os.utime(path, (old, old))
    with start_server(models) as srv:
        assert ollama.Client(host=srv.url).show("tiny").modelfile  # the store is otherwise untouched
    assert [p.exists() for p in stale + [fresh]] == [False, False, True]
    r = stack("fsck", "--models", str(models))
    assert r.returncode == 0 and f"leftover: blobs/{fresh.name}" in r.stdout.splitlines(), r.stdout


def test_fsck_finds_every_broken_invariant_and_repair_touches_only_leftovers(tmp_path, tiny_gguf):
    models = make_store(tmp_path, tiny_gguf)
    blobs = models / "blobs"
    manifest = models / "manifests/registry.ollama.ai/library/tiny/latest"
    layers = json.loads(manifest.read_bytes())["layers"]
    system = next(layer["digest"] for layer in layers if layer["mediaType"].endswith(".system"))
    system_path = blobs / system.replace(":", "-")
    system_path.write_bytes(b"tampered")  # a referenced blob whose bytes no longer match
    model_digest = next(layer["digest"] for layer in layers if layer["mediaType"].endswith(".model"))
    (models / "manifests/registry.ollama.ai/other/tiny/v2").write_bytes(b'{"layers": [')  # torn manifest
    stale = [blobs / ".tmp-0123456789abcdef", blobs / ("sha256-" + "c" * 64 + "-partial"),
             manifest.parent / ".tmp-fedcba9876543210"]
    fresh = blobs / ".tmp-aaaaaaaaaaaaaaaa"
    for path in stale + [fresh]:
        path.write_bytes(b"half")
    old = time.time() - 3600
    for path in stale:
        os.utime(path, (old, old))
    (blobs / "notes.txt").write_text("hello")

    r = stack("fsck", "--models", str(models))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert f"error: blob {system_path.name}: content hashes to sha256:{hashlib.sha256(b'tampered').hexdigest()}" in lines
    assert any(line.startswith("error: manifest registry.ollama.ai/other/tiny/v2: invalid manifest: not JSON (JSONDecodeError)") for line in lines)
    assert "leftover: blobs/.tmp-0123456789abcdef" in lines and "note: unexpected file blobs/notes.txt" in lines
    assert lines[-1].endswith("4 leftovers: 2 errors")

    before = {p: p.read_bytes() for p in blobs.iterdir() if p.name.startswith("sha256-") and not p.name.endswith("partial")}
    r = stack("fsck", "--models", str(models), "--repair", "--grace", "60")
    assert r.returncode == 1  # repair never "fixes" a broken manifest or blob by deleting it
    assert all(not p.exists() for p in stale) and fresh.exists()
    assert "kept (younger than the grace period): blobs/.tmp-aaaaaaaaaaaaaaaa" in r.stdout.splitlines()
    assert {p: p.read_bytes() for p in before} == before  # every blob still there, untouched
    assert (blobs / model_digest.replace(":", "-")).exists() and (blobs / "notes.txt").exists()


def test_fsck_reports_missing_and_planted_blobs_and_goes_on(tmp_path, tiny_gguf):
    """A referenced blob deleted, another replaced by a link out of the store: both are errors of
    the report (fsck does not stop at the first), and the link is never followed."""
    models = make_store(tmp_path, tiny_gguf)
    manifest = models / "manifests/registry.ollama.ai/library/tiny/latest"
    layers = {layer["mediaType"].rsplit(".", 1)[-1]: layer["digest"] for layer in json.loads(manifest.read_bytes())["layers"]}
    (models / "blobs" / layers["model"].replace(":", "-")).unlink()
    system = models / "blobs" / layers["system"].replace(":", "-")
    system.unlink()
    outside = tmp_path / "outside.txt"
    outside.write_text("not in the store")
    system.symlink_to(outside)
    r = stack("fsck", "--models", str(models))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for name in ("registry.ollama.ai/library/tiny/latest", "registry.ollama.ai/other/tiny/v2"):
        assert f"error: manifest {name}: missing blob {layers['model']}" in lines
        assert f"error: manifest {name}: blob {layers['system']}: path escapes the model store" in lines
    assert lines[-1].endswith(": 4 errors") and outside.read_text() == "not in the store"


def test_fsck_without_a_store(tmp_path):
    r = stack("fsck", "--models", str(tmp_path / "nope"))
    assert (r.returncode, r.stderr.strip()) == (
        1, f"Error: no model store at {tmp_path / 'nope'} (it has no blobs/ and manifests/ directories)")
    assert not (tmp_path / "nope").exists()


def test_doctor_healthy_open_server(stack_server):
    r = stack("doctor", "--host", stack_server.host_env, "--min-free", "0")
    assert r.returncode == 0, r.stdout
    rows = [line.split(None, 2) for line in r.stdout.splitlines()]
    assert [row[:2] for row in rows] == [["CHECK", "STATUS"], ["reachable", "ok"], ["version", "ok"], ["auth", "warn"],
                                         ["models", "ok"], ["disk", rows[5][1]]]
    assert rows[4][2] == "0 models"
    assert rows[5][1] in ("ok", "warn") and rows[5][2].endswith("for the model store" if rows[5][1] == "ok" else "free")


def test_store_space_route_reports_the_stores_filesystem(tmp_path):
    keys_file = tmp_path / "keys.json"
    user = kf.add(keys_file, "ci", "user")
    with start_server(tmp_path / "models", env={"CORRAL_KEYS_FILE": str(keys_file)}) as srv:
        assert httpx.get(f"{srv.url}/api/corral/store").status_code == 401
        r = httpx.get(f"{srv.url}/api/corral/store", headers={"Authorization": f"Bearer {user}"})
        assert r.status_code == 200 and set(r.json()) == {"free_bytes", "total_bytes"}  # no path
        usage = shutil.disk_usage(srv.models)
        assert r.json()["total_bytes"] == usage.total
        assert abs(r.json()["free_bytes"] - usage.free) < 256 << 20  # the same filesystem, give or take a write


def test_doctor_fails_when_the_store_is_short_of_space(stack_server):
    r = stack("doctor", "--host", stack_server.host_env, "--min-free", "1000000", "--format", "json")
    assert r.returncode == 1, r.stdout
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["disk"]["status"] == "fail"
    assert checks["disk"]["detail"].endswith("less than 1000000.0 GiB, a pull or create may run out of room")
    assert [checks[n]["status"] for n in ("reachable", "version", "models")] == ["ok"] * 3


@pytest.mark.parametrize("free, total, status, detail", [
    (5 << 30, 10 << 30, "ok", "5.0 GiB free of 10.0 GiB for the model store"),
    (2 << 30, 100 << 30, "warn", "2.0 GiB free of 100.0 GiB for the model store: less than 10% free"),
    ((1 << 30) - 1, 2 << 30, "fail",
     "1.0 GiB free of 2.0 GiB for the model store: less than 1.0 GiB, a pull or create may run out of room"),
    (0, 0, "fail", "0.0 GiB free of 0.0 GiB for the model store: less than 1.0 GiB, a pull or create may run out of room"),
])
def test_disk_check_thresholds(free, total, status, detail):
    assert disk_check(free, total) == Check("disk", status, detail)


def test_doctor_warns_when_a_server_does_not_report_its_disk(tmp_path):
    """A real Ollama has no /api/corral/store: the check warns and doctor still passes."""

    class OllamaLike(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = {"/": b"Ollama is running", "/api/version": b'{"version": "0.12.0"}',
                    "/api/tags": b'{"models": []}'}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"404 page not found")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OllamaLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = stack("doctor", "--host", f"127.0.0.1:{server.server_port}", "--format", "json")
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stdout
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["disk"] == {"name": "disk", "status": "warn",
                              "detail": "the server does not report its free space (not stack serve)"}


def test_doctor_with_keys(tmp_path):
    keys_file = tmp_path / "keys.json"
    token = kf.add(keys_file, "ci", "user")
    with start_server(tmp_path / "models", env={"CORRAL_KEYS_FILE": str(keys_file)}) as srv:
        ok = stack("doctor", "--host", srv.host_env, "--format", "json", "--min-free", "0", env={"CORRAL_TOKEN": token})
        assert ok.returncode == 0, ok.stdout
        report = json.loads(ok.stdout)
        assert report["ok"] and [c["status"] for c in report["checks"]][:4] == ["ok"] * 4
        assert report["checks"][4]["name"] == "disk" and report["checks"][4]["status"] in ("ok", "warn")
        assert report["checks"][2]["detail"] == "CORRAL_TOKEN accepted"
        missing = stack("doctor", "--host", srv.host_env, "--format", "json")
        checks = {c["name"]: c for c in json.loads(missing.stdout)["checks"]}
        assert missing.returncode == 1
        assert checks["auth"] == {"name": "auth", "status": "fail", "detail": "the server needs an API key: set CORRAL_TOKEN"}
        assert checks["disk"] == {"name": "disk", "status": "skip", "detail": "needs a working API key"}
        wrong = stack("doctor", "--host", srv.host_env, "--format", "json", env={"CORRAL_TOKEN": "corral_nope"})
        checks = {c["name"]: c for c in json.loads(wrong.stdout)["checks"]}
        assert wrong.returncode == 1 and checks["auth"]["detail"] == "CORRAL_TOKEN refused: 401 unauthorized"
        assert token not in ok.stdout + missing.stdout + wrong.stdout


def test_doctor_fails_on_a_stopped_server():
    port = free_port()
    r = stack("doctor", "--host", f"127.0.0.1:{port}")
    assert r.returncode == 1
    assert r.stdout.splitlines()[1].split(None, 2) == [
        "reachable", "fail", f"could not connect to http://127.0.0.1:{port}: is the server running?"]
    assert [line.split()[:2] for line in r.stdout.splitlines()[2:]] == [
        ["version", "skip"], ["auth", "skip"], ["models", "skip"], ["disk", "skip"]]


def test_doctor_with_a_stack_file(tmp_path, tiny_gguf):
    keys_file = tmp_path / "keys.json"
    token = kf.add(keys_file, "ops", "admin")
    with start_server(tmp_path / "models", env={"CORRAL_KEYS_FILE": str(keys_file)}) as srv:
        stack_file = tmp_path / "stack.yaml"
        stack_file.write_text(
            "version: 1\n"
            f"targets:\n  team:\n    url: http://{srv.host_env}\n    token: ${{DOC_TOKEN}}\n"
            f"models:\n  tiny:\n    from: {tiny_gguf}\n"
        )
        env = {"DOC_TOKEN": token}
        r = stack("doctor", "-f", str(stack_file), "--format", "json", env=env)
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert r.returncode == 1 and checks["auth"]["status"] == "ok" and checks["auth"]["target"] == "team"
        assert checks["model tiny:latest"]["status"] == "fail"
        assert checks["model tiny:latest"]["detail"] == "create: not on the server (run `stack apply`)"

        r = stack("apply", "-f", str(stack_file), "--auto-approve", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        r = stack("doctor", "-f", str(stack_file), "--target", "team", "--min-free", "0", env=env)
        assert r.returncode == 0, r.stdout
        rows = [line.split(None, 3) for line in r.stdout.splitlines()]
        assert [row[1:3] for row in rows[1:]] == [["reachable", "ok"], ["version", "ok"], ["auth", "ok"],
                                                  ["models", "ok"], ["disk", rows[5][2]], ["model", "tiny:latest"],
                                                  ["run", "tiny:latest"]]
        assert r.stdout.splitlines()[6].split()[:4] == ["team", "model", "tiny:latest", "ok"]
        assert r.stdout.splitlines()[7].split()[:5] == ["team", "run", "tiny:latest", "ok", "generated"]

        r = stack("doctor", "-f", str(stack_file), env={"DOC_TOKEN": "corral_wrong"})
        assert r.returncode == 1 and "the token of target team refused: 401 unauthorized" in r.stdout

        # the server's model is no longer the one declared (another digest): doctor fails on it
        (tmp_path / "Modelfile").write_text(f"FROM {tiny_gguf}\nSYSTEM a newer prompt\n")
        stack_file.write_text(stack_file.read_text().replace(f"from: {tiny_gguf}", "modelfile: Modelfile"))
        r = stack("doctor", "-f", str(stack_file), "--min-free", "0", "--format", "json", env=env)
        assert r.stdout, r.stderr
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert r.returncode == 1 and checks["model tiny:latest"]["status"] == "fail", r.stdout
        assert checks["model tiny:latest"]["detail"].startswith("update: ")
