"""End to end: real `stack serve` processes on loopback pushing to and pulling from each other.

A creates a model from the tiny GGUF, copies it to `<B>/team/bot:v2` and pushes it to B
(`stack push ... --insecure`); C, with an empty store, pulls it from B (`stack pull`); the
model on C is the same model (manifest digest, blobs, /api/show) as on A. Then the
failures: a cut connection through the fault proxy, and a full disk (the server runs
under RLIMIT_FSIZE, so writes past the limit fail with EFBIG as on a full file system).
"""

from __future__ import annotations

import hashlib
import resource
from pathlib import Path

import httpx
import pytest

from server.store import Store
from tests.support.faultproxy import Cut, FaultProxy
from tests.support.server import ServerProcess, start_server
from toolchain.cli import main


def create(srv: ServerProcess, name: str, gguf: Path, system: str = "You are a support bot.") -> None:
    data = gguf.read_bytes()
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{srv.url}/api/blobs/{d}", content=data).status_code in (200, 201)
    r = httpx.post(
        f"{srv.url}/api/create",
        json={"model": name, "files": {"tiny.gguf": d}, "system": system, "stream": False},
        timeout=60,
    )
    assert r.status_code == 200, r.text


def tags(srv: ServerProcess) -> dict[str, str]:
    return {m["name"]: m["digest"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}


def show(srv: ServerProcess, name: str) -> dict:
    r = httpx.post(f"{srv.url}/api/show", json={"model": name})
    assert r.status_code == 200, r.text
    body = r.json()
    body.pop("modified_at", None)
    body.pop("modelfile", None)  # names the model and the store's blob paths
    return body


def visible_files(models: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(models)): p.read_bytes()
        for p in sorted(models.rglob("*"))
        if p.is_file() and not p.name.startswith(".tmp-")
    }


def stack(monkeypatch, srv: ServerProcess, *args: str) -> int:
    monkeypatch.setenv("OLLAMA_HOST", srv.host_env)
    return main(list(args))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    a = start_server(tmp_path_factory.mktemp("a"))
    b = start_server(tmp_path_factory.mktemp("b"))
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_push_to_a_team_server_and_pull_into_an_empty_store(servers, tmp_path, tiny_gguf, monkeypatch, capsys):
    a, b = servers
    create(a, "team/bot:v2", tiny_gguf)
    remote = f"127.0.0.1:{b.port}/team/bot:v2"
    assert httpx.post(f"{a.url}/api/copy", json={"source": "team/bot:v2", "destination": remote}).status_code == 200

    assert stack(monkeypatch, a, "push", remote, "--insecure") == 0
    err = capsys.readouterr().err
    assert "retrieving manifest" in err and "pushing manifest" in err and "success" in err
    # B serves it under the name it was pushed as, with the same manifest digest.
    assert tags(b)["team/bot:v2"] == tags(a)["team/bot:v2"]
    assert show(b, "team/bot:v2") == show(a, "team/bot:v2")

    with start_server(tmp_path / "c") as c:
        assert stack(monkeypatch, c, "pull", remote, "--insecure") == 0
        err = capsys.readouterr().err
        assert "pulling manifest" in err and "verifying sha256 digest" in err and "success" in err
        assert tags(c) == {remote: tags(a)["team/bot:v2"]}
        assert show(c, remote) == show(a, "team/bot:v2")
        blobs_a = {k: v for k, v in visible_files(a.models).items() if k.startswith("blobs/")}
        for path, data in visible_files(c.models).items():
            if path.startswith("blobs/"):
                assert blobs_a[path] == data
                assert path == "blobs/sha256-" + hashlib.sha256(data).hexdigest()
        assert Store(c.models).verify() == []
        run_pulled_model(c, remote)


def run_pulled_model(srv: ServerProcess, name: str) -> None:
    """Run a pulled model on the server it was pulled into."""
    r = httpx.post(
        f"{srv.url}/api/generate",
        json={"model": name, "prompt": "Say hello.", "stream": False, "options": {"num_predict": 4, "seed": 1}},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True and r.json()["eval_count"] >= 1


@pytest.mark.e2e
def test_the_real_model_pushed_and_pulled_runs(servers, tmp_path, gemma_gguf, monkeypatch):
    a, b = servers
    create(a, "team/gemma:v1", gemma_gguf, system="Be brief.")
    remote = f"127.0.0.1:{b.port}/team/gemma:v1"
    assert httpx.post(f"{a.url}/api/copy", json={"source": "team/gemma:v1", "destination": remote}).status_code == 200
    assert stack(monkeypatch, a, "push", remote, "--insecure") == 0
    with start_server(tmp_path / "c") as c:
        assert stack(monkeypatch, c, "pull", remote, "--insecure") == 0
        assert tags(c)[remote] == tags(a)["team/gemma:v1"]
        assert Store(c.models).verify() == []
        run_pulled_model(c, remote)


def test_stack_pull_of_a_model_created_on_the_team_server(servers, tmp_path, tiny_gguf, monkeypatch, capsys):
    _, b = servers
    create(b, "team/support-bot:v2", tiny_gguf, system="Answer support questions.")
    with start_server(tmp_path / "c") as c:
        name = f"127.0.0.1:{b.port}/team/support-bot:v2"
        assert stack(monkeypatch, c, "pull", name, "--insecure") == 0
        assert tags(c)[name] == tags(b)["team/support-bot:v2"]
        assert show(c, name)["system"] == "Answer support questions."

        # A model the team server does not have: one error line, exit 1, nothing stored.
        before = visible_files(c.models)
        capsys.readouterr()
        assert stack(monkeypatch, c, "pull", f"127.0.0.1:{b.port}/team/nope:v2", "--insecure") == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == "Error: pull model manifest: file does not exist"
        assert visible_files(c.models) == before
        # Without --insecure the client speaks TLS to a plain-HTTP server and fails cleanly.
        assert stack(monkeypatch, c, "pull", f"127.0.0.1:{b.port}/team/support-bot:v2") == 1
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("Error: pull model manifest: ")
        assert visible_files(c.models) == before


def test_pull_resumes_after_a_cut_connection(servers, tmp_path, tiny_gguf):
    _, b = servers
    create(b, "team/resume:v1", tiny_gguf)
    model_digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    with FaultProxy(b.port) as proxy, start_server(tmp_path / "c") as c:
        proxy.add(lambda s: s.method == "GET" and model_digest in s.path, Cut(after=200_000))
        r = httpx.post(
            f"{c.url}/api/pull",
            json={"model": f"{proxy.host}/team/resume:v1", "insecure": True, "stream": False},
            timeout=120,
        )
        assert (r.status_code, r.json()) == (200, {"status": "success"})
        gets = proxy.requests("GET", model_digest)
        assert [g.headers.get("range", "") for g in gets][0] == ""
        assert gets[1].headers["range"].startswith("bytes=") and gets[1].headers["range"] != "bytes=0-"
        blob = c.models / "blobs" / model_digest.replace(":", "-")
        assert blob.read_bytes() == tiny_gguf.read_bytes()


def start_limited_server(models: Path, max_file_bytes: int) -> ServerProcess:
    """`stack serve` whose files may not grow past `max_file_bytes` (RLIMIT_FSIZE): a full disk
    for every write the store makes, without root or a tmpfs. Python ignores SIGXFSZ, so a
    write past the limit fails with EFBIG."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return start_server(models, preexec_fn=limit)


def test_disk_full_fails_cleanly_and_leaves_the_store_unchanged(servers, tmp_path, tiny_gguf):
    a, b = servers
    create(b, "team/big:v1", tiny_gguf)
    model_digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    with start_limited_server(tmp_path / "c", max_file_bytes=128 * 1024) as c:
        before = visible_files(c.models)
        r = httpx.post(
            f"{c.url}/api/pull",
            json={"model": f"127.0.0.1:{b.port}/team/big:v1", "insecure": True, "stream": False},
            timeout=120,
        )
        assert (r.status_code, r.json()) == (507, {"error": f"no space left on device while writing {model_digest}"})
        assert visible_files(c.models) == before
        assert Store(c.models).verify() == []

        # The other direction: a push into the full server.
        create(a, "team/big:v1", tiny_gguf)
        remote = f"127.0.0.1:{c.port}/team/big:v1"
        assert httpx.post(f"{a.url}/api/copy", json={"source": "team/big:v1", "destination": remote}).status_code == 200
        r = httpx.post(f"{a.url}/api/push", json={"model": remote, "insecure": True, "stream": False}, timeout=120)
        assert (r.status_code, r.json()) == (502, {"error": "507: no space left on device"})
        assert visible_files(c.models) == before
        assert list((c.models / "blobs" / ".uploads").iterdir()) == []
        assert c.proc.poll() is None  # the server lives on
