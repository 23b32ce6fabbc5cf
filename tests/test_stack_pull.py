"""Pulled models in a stack, against two real `stack serve`: a registry (A) and a target (B).

A serves its models over the registry API (`/v2/`); the stack on B pulls `A/team/base:v1`
(plain HTTP, `insecure: true`), builds a variant FROM it, pins it with `stack lock`, and
refuses a pin the registry no longer serves.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.server import start_server
from tests.support.tiny_gguf import write_tiny_llama
from toolchain.cli import main
from toolchain.client import Client


def publish(registry, name: str, gguf: Path) -> str:
    """Create `name` on the registry server; its manifest digest."""
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    with Client(registry.url) as c:
        c.create_blob(digest, gguf.read_bytes())
        for _ in c.create({"model": name, "files": {"m.gguf": digest}}):
            pass
        return "sha256:" + next(m["digest"] for m in c.tags() if m["name"] == name)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("registry")) as a, start_server(tmp_path_factory.mktemp("target")) as b:
        yield a, b


@pytest.fixture
def setup(servers, tmp_path, tiny_gguf, monkeypatch):
    a, b = servers
    with Client(b.url) as c:
        for m in c.tags():
            c.delete(m["name"])
    digest = publish(a, "team/base:v1", tiny_gguf)
    ref = f"{a.host_env}/team/base:v1"
    (tmp_path / ".git").mkdir()
    (tmp_path / "bot.Modelfile").write_text(f"FROM {ref}\nSYSTEM You help.\n")
    (tmp_path / "stack.yaml").write_text(
        "# the team stack\n"
        "targets:\n"
        f"  b:\n    url: {b.url}\n"
        "models:\n"
        f"  '{ref}':\n"
        f"    pull: {ref}   # the shared base\n"
        "    insecure: true\n"
        "  bot:\n"
        "    modelfile: bot.Modelfile\n"
        "  notes:\n"
        "    modelfile: bot.Modelfile\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_LOCK_DIR", str(tmp_path))
    return a, b, ref, digest


def test_pull_then_build_on_it(setup, capsys):
    a, b, ref, digest = setup
    assert main(["plan", "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert "Plan: 1 to pull, 2 to create, 0 to update, 0 to replace, 0 to delete." in out
    assert out.index(f"# {ref} will be pulled") < out.index("# bot:latest will be created")
    assert main(["apply", "--auto-approve"]) == 0
    err = capsys.readouterr().err  # the pull's progress, as `stack pull` shows it
    assert "pulling manifest" in err and "verifying sha256 digest" in err and "success" in err
    with Client(b.url) as c:
        tags = {m["name"]: "sha256:" + m["digest"] for m in c.tags()}
    assert tags[ref] == digest and "bot:latest" in tags
    assert main(["plan", "--detailed-exitcode"]) == 0


def test_lock_pins_the_registry_digest_and_keeps_comments(setup, capsys):
    a, b, ref, digest = setup
    before = Path("stack.yaml").read_text()
    assert main(["lock"]) == 0
    assert f"{ref}: {ref} → {ref}@{digest}" in capsys.readouterr().out
    after = Path("stack.yaml").read_text()
    assert after == before.replace(f"pull: {ref}   #", f"pull: {ref}@{digest} #")  # the comment stays
    assert main(["lock"]) == 0
    assert "Every pulled model is pinned." in capsys.readouterr().out
    # A pinned stack applies and converges.
    assert main(["apply", "--auto-approve"]) == 0
    capsys.readouterr()
    assert main(["plan", "--detailed-exitcode"]) == 0


def test_a_pin_the_registry_no_longer_serves_is_refused(setup, tmp_path, capsys):
    a, b, ref, digest = setup
    assert main(["lock"]) == 0
    # The registry's tag moves to other weights.
    moved = publish(a, "team/base:v1", write_tiny_llama(tmp_path / "other.gguf", seed=3))
    assert moved != digest
    assert main(["apply", "--auto-approve"]) == 1
    err = capsys.readouterr().err
    assert f"the registry serves {moved} for {ref}, but the stack pins {digest}; nothing was pulled" in err
    with Client(b.url) as c:
        assert c.tags() == []
    # Accepting the new version is an explicit, reviewable change.
    assert main(["lock", "--update"]) == 0
    assert f"{ref}@{digest} → {ref}@{moved}" in capsys.readouterr().out
    assert main(["apply", "--auto-approve"]) == 0
    assert main(["plan", "--detailed-exitcode"]) == 0


def test_a_moved_pin_on_the_server_is_a_pull(setup, tmp_path, capsys):
    a, b, ref, digest = setup
    assert main(["lock"]) == 0
    assert main(["apply", "--auto-approve"]) == 0
    moved = publish(a, "team/base:v1", write_tiny_llama(tmp_path / "v2.gguf", seed=5))
    assert main(["lock", "--update"]) == 0
    capsys.readouterr()
    assert main(["plan", "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert f"# {ref} will be pulled (the pinned digest differs)" in out
    assert f"~ digest {digest[:19]} → {moved[:19]}" in out
