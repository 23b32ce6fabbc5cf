"""A stack over several replicas, end to end: real `stack serve` processes on loopback.

U is the registry the stack pulls from (a `stack serve` too), reached through a recording proxy
so the test sees every request it answers; A, B and C are the replicas. Plan shows one section per
replica and a total; apply goes through them in order (or `--parallel`), stops at the first
failure, fetches a pulled model from U once and relays it to the other replicas through their own
registry endpoints, so every replica holds the same manifest bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy, Respond
from tests.support.server import start_server
from toolchain import keys as kf
from toolchain.cli import main
from toolchain.client import Client

BOT_MF = "SYSTEM You are a support bot.\nPARAMETER temperature 0.3\n"
NOTES_MF = 'TEMPLATE """<user>{{ .Prompt }}</user>"""\nSYSTEM You take notes.\nPARAMETER stop </user>\n'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_gguf):
    """(upstream proxy, published reference, [A, B, C])."""
    root = tmp_path_factory.mktemp("fleet")
    servers = []
    try:
        for name in ("u", "a", "b", "c"):
            servers.append(start_server(root / name))
        u, replicas = servers[0], servers[1:]
        digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
        with FaultProxy(u.port) as proxy, Client(u.url) as c:
            c.create_blob(digest, tiny_gguf.read_bytes())
            for _ in c.create({"model": "team/base:v1", "files": {"m.gguf": digest}}):
                pass
            yield proxy, f"{proxy.host}/team/base:v1", replicas
    finally:
        for srv in servers:
            srv.stop()


def write_stack(folder: Path, targets: dict[str, str], ref: str | None, tokens: dict[str, str] | None = None) -> None:
    """A stack with a pulled base, a variant built FROM it, and a model built from the tiny GGUF."""
    (folder / ".git").mkdir(parents=True, exist_ok=True)
    lines = ["targets:"]
    for name, url in targets.items():
        lines.append(f"  {name}:\n    url: {url}")
        if tokens and name in tokens:
            lines.append(f"    token: ${{{tokens[name]}}}")
    lines.append("models:")
    if ref is not None:
        lines.append(f"  '{ref}':\n    pull: {ref}\n    insecure: true")
        lines.append("  bot:\n    modelfile: bot.Modelfile")
        (folder / "bot.Modelfile").write_text(f"FROM {ref}\n{BOT_MF}")
    lines.append("  notes:\n    from: ${TINY_GGUF}\n    modelfile: notes.Modelfile")
    (folder / "notes.Modelfile").write_text(NOTES_MF)
    (folder / "stack.yaml").write_text("\n".join(lines) + "\n")


def tags(url: str, token: str | None = None) -> dict[str, str]:
    with Client(url, token=token) as c:
        return {m["name"]: "sha256:" + m["digest"] for m in c.tags()}


def empty(*urls: str) -> None:
    for url in urls:
        with Client(url) as c:
            for m in c.tags():
                c.delete(m["name"])


def upstream_blobs(proxy: FaultProxy, ref: str) -> set[str]:
    """The digests of the blobs U's manifest for `ref` references."""
    with Client(f"http://{proxy.host}") as c:
        raw = c.request("GET", "/v2/team/base/manifests/v1").content
    manifest = json.loads(raw)
    return {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


def fetched(proxy: FaultProxy, since: int) -> Counter:
    """What U served since request number `since`: manifest reads and blob reads, by path."""
    return Counter(s.path for s in proxy.seen[since:] if s.method == "GET" and ("/manifests/" in s.path or "/blobs/" in s.path))


@pytest.fixture
def setup(fleet, tmp_path, tiny_gguf, monkeypatch):
    proxy, ref, replicas = fleet
    empty(*(r.url for r in replicas))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINY_GGUF", str(tiny_gguf))
    monkeypatch.setenv("CORRAL_LOCK_DIR", str(tmp_path))
    return proxy, ref, replicas


def assert_once(proxy: FaultProxy, ref: str, since: int) -> None:
    got = fetched(proxy, since)
    blobs = upstream_blobs(proxy, ref)  # (a read of its own, after counting)
    assert got == Counter(["/v2/team/base/manifests/v1", *(f"/v2/team/base/blobs/{d}" for d in blobs)]), got


def assert_same_everywhere(urls: list[str], models: set[str]) -> None:
    held = [tags(u) for u in urls]
    for h in held:
        assert set(h) == models, h  # no alias, no host-named copy left behind
    for model in models:
        assert len({h[model] for h in held}) == 1, (model, held)  # one manifest digest on every replica


def test_plan_shows_each_replica_then_apply_fetches_a_pull_once(setup, capsys):
    proxy, ref, (a, b, c) = setup
    write_stack(Path("."), {"a": a.url, "b": b.url, "c": c.url}, ref)

    assert main(["plan", "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert [out.index(f'Target "{n}"') for n in "abc"] == sorted(out.index(f'Target "{n}"') for n in "abc")
    for n in "abc":
        assert f'  Plan for "{n}": 1 to pull, 2 to create, 0 to update, 0 to replace, 0 to delete.\n' in out
    assert out.endswith("Total for 3 targets (3 with changes): 3 to pull, 6 to create, 0 to update, 0 to replace, 0 to delete.\n")
    assert main(["plan", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["summary"]["pull"], doc["summary"]["create"]) == (3, 6)
    assert main(["plan", "--format", "markdown"]) == 0
    assert "**Total for 3 targets (3 with changes): 3 to pull, 6 to create," in capsys.readouterr().out

    since = len(proxy.seen)
    assert main(["apply", "--auto-approve"]) == 0
    out = capsys.readouterr().out
    assert f"[b]   from a ({a.url})" in out and f"[c]   from a ({a.url})" in out
    assert out.index("[a] ") < out.index("[b] ") < out.index("[c] ")  # one target after another
    assert "Apply complete: 9 of 9 change(s) made." in out
    assert_once(proxy, ref, since)  # fetched from its registry once, by a
    # The pulled model, the variant built on it and the one built from a GGUF + Modelfile:
    # byte-identical manifests on the three replicas.
    assert_same_everywhere([a.url, b.url, c.url], {ref, "bot:latest", "notes:latest"})
    assert main(["plan", "--detailed-exitcode"]) == 0
    assert "No changes. Every server matches the stack." in capsys.readouterr().out


def test_what_stack_lock_pins_is_what_every_replica_reports(setup, capsys):
    """Pull and the relay move the manifest byte for byte: the digest `stack lock` pins from the
    registry is the digest each replica lists after apply."""
    import re

    _, ref, (a, b, c) = setup
    write_stack(Path("."), {"a": a.url, "b": b.url, "c": c.url}, ref)
    assert main(["lock"]) == 0
    pinned = re.search(rf"pull: {re.escape(ref)}@(sha256:[0-9a-f]{{64}})\n", Path("stack.yaml").read_text()).group(1)
    assert main(["apply", "--auto-approve"]) == 0
    assert f"[b]   from a ({a.url})" in capsys.readouterr().out  # relayed, not pulled again
    assert [tags(url)[ref] for url in (a.url, b.url, c.url)] == [pinned] * 3


def test_a_modelfile_model_has_one_digest_on_every_replica(setup, capsys):
    _, _, (a, b, c) = setup
    write_stack(Path("."), {"a": a.url, "b": b.url, "c": c.url}, None)
    assert main(["apply", "--auto-approve"]) == 0
    assert "Apply complete: 3 of 3 change(s) made." in capsys.readouterr().out
    assert_same_everywhere([a.url, b.url, c.url], {"notes:latest"})


def test_parallel_applies_the_replicas_at_once(setup, capsys):
    proxy, ref, (a, b, c) = setup
    write_stack(Path("."), {"a": a.url, "b": b.url, "c": c.url}, ref)
    since = len(proxy.seen)
    assert main(["apply", "--auto-approve", "--parallel", "3"]) == 0
    captured = capsys.readouterr()
    assert "Apply complete: 9 of 9 change(s) made." in captured.out
    steps = [ln for ln in captured.out.splitlines() if " pulling " in ln or " creating " in ln]
    assert len(steps) == 9 and all(ln[:4] in ("[a] ", "[b] ", "[c] ") for ln in steps), steps
    # progress of three servers at once: whole lines, each naming its target
    progress = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert progress and all(ln[:4] in ("[a] ", "[b] ", "[c] ") for ln in progress), progress
    assert any(ln.startswith("[b] ") and "success" in ln for ln in progress)
    assert_once(proxy, ref, since)  # b and c waited for a's pull, then relayed it
    assert_same_everywhere([a.url, b.url, c.url], {ref, "bot:latest", "notes:latest"})


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_an_unreachable_replica_stops_the_apply_before_the_next(setup, tmp_path, parallel, capsys):
    _, ref, (a, _, c) = setup
    with start_server(tmp_path / "b") as b:
        write_stack(Path("."), {"a": a.url, "b": b.url, "c": c.url}, ref)
        assert main(["plan", "--out", "plan.json"]) == 0
    # b is gone now: a saved plan is applied without planning again
    capsys.readouterr()
    assert main(["apply", "plan.json", "--parallel", parallel]) == 1
    captured = capsys.readouterr()
    assert "Error: target b: could not connect to" in captured.err
    assert "not started, unchanged: c" in captured.err
    assert "Stopped: 3 of 9 change(s) made; applied: a; failed: b; not started: c." in captured.out
    assert set(tags(a.url)) == {ref, "bot:latest", "notes:latest"}
    assert tags(c.url) == {}  # untouched: it keeps serving what it had


def test_a_replica_refusing_a_change_stops_the_apply(setup, tmp_path, monkeypatch, capsys):
    _, ref, (a, _, c) = setup
    keys = tmp_path / "keys.json"
    monkeypatch.setenv("B_TOKEN", kf.add(keys, "reader", "user"))  # may read (plan), not change (apply)
    with start_server(tmp_path / "b", env={"CORRAL_KEYS_FILE": str(keys)}) as b:
        write_stack(Path("."), {"a": a.url, "b": b.url, "c": c.url}, None, tokens={"b": "B_TOKEN"})
        assert main(["apply", "--auto-approve"]) == 1
        captured = capsys.readouterr()
        assert "Error: target b: cannot take the apply lock on" in captured.err
        assert "not started, unchanged: c" in captured.err
        assert tags(b.url, token=os.environ["B_TOKEN"]) == {}
    assert set(tags(a.url)) == {"notes:latest"}
    assert tags(c.url) == {}


def test_relay_with_keys_and_the_fallbacks_to_the_registry(setup, tmp_path, monkeypatch, capsys):
    """a has keys: b reads its registry with a token its server was given; c has none and falls back
    to the registry; d looks like a real Ollama (no /v2/) and pulls from the registry directly."""
    proxy, ref, (open_c, open_d, _) = setup
    keys = tmp_path / "keys.json"
    admin, reader = kf.add(keys, "ops", "admin"), kf.add(keys, "replicas", "user")
    monkeypatch.setenv("A_TOKEN", admin)
    with start_server(tmp_path / "a", env={"CORRAL_KEYS_FILE": str(keys)}) as a:
        auth = json.dumps({a.host_env: {"token": reader}})
        with start_server(tmp_path / "b", env={"CORRAL_REGISTRY_AUTH": auth}) as b, FaultProxy(open_d.port) as d:
            d.add(lambda s: s.path.startswith("/v2"), Respond(404, b"404 page not found"), times=100)
            write_stack(Path("."), {"a": a.url, "b": b.url, "c": open_c.url, "d": f"http://{d.host}"}, ref,
                        tokens={"a": "A_TOKEN"})
            since = len(proxy.seen)
            assert main(["apply", "--auto-approve"]) == 0
            out = capsys.readouterr().out
            assert f"[b]   from a ({a.url})" in out
            assert f"[c]   could not pull {ref} from a ({a.url}): " in out and "pulling it from its registry instead" in out
            assert "[d]   from its registry: this server has no registry endpoints (not a stack serve)" in out
            assert fetched(proxy, since)["/v2/team/base/manifests/v1"] == 3  # a, c and d
            held = [tags(a.url, admin), tags(b.url), tags(open_c.url), tags(f"http://{d.host}")]
            assert all(set(h) == {ref, "bot:latest", "notes:latest"} for h in held), held
            assert len({h[ref] for h in held}) == 1


@pytest.mark.parametrize(
    "model,taken,alias",
    [
        ("127.0.0.1:5000/team/Base:v1", set(), "corral-fleet-r1/base:v1"),
        ("qwen2.5:0.5b", set(), "corral-fleet-r1/qwen2.5:0.5b"),
        ("other/base:v1", {"corral-fleet-r1/base:v1"}, "corral-fleet-r1/base-2:v1"),
        ("x/base:v1", {"corral-fleet-r1/base:v1", "corral-fleet-r1/base-2:v1"}, "corral-fleet-r1/base-3:v1"),
    ],
)
def test_alias_names(model, taken, alias):
    from toolchain.names import parse_name
    from toolchain.stack.fleet import alias_name

    assert alias_name(model, "r1", taken) == alias
    assert parse_name(alias).is_valid() and parse_name(alias).host == "registry.ollama.ai"  # served by /v2/


def test_progress_of_parallel_targets_is_written_in_whole_prefixed_lines():
    import io
    import threading

    from toolchain.stack.fleet import _Prefixed

    out = io.StringIO()
    stream = _Prefixed("gpu-2", out, threading.Lock())
    stream.write("pulling man")
    assert out.getvalue() == ""  # half a line waits for its end
    stream.write("ifest\nverifying\r\nsuccess\n")
    assert out.getvalue() == "[gpu-2] pulling manifest\n[gpu-2] verifying\n[gpu-2] success\n"
    assert not stream.isatty()  # rich then prints plain status lines, no live bars


def test_ctrl_c_stops_parallel_targets_before_their_next_change(setup, tmp_path):
    """b waits for another apply's lock while a is applied: Ctrl-C ends the wait, a keeps what it did."""
    import signal
    import subprocess
    import sys

    from tests.support.server import REPO_ROOT
    from toolchain.client import base_url
    from toolchain.stack.apply import apply_lock

    _, _, (a, b, _) = setup
    write_stack(Path("."), {"a": a.url, "b": b.url}, None)
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    with apply_lock(base_url(b.url)), open(tmp_path / "err.txt", "w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolchain.cli", "apply", "--auto-approve", "--parallel", "2", "--lock-timeout", "120"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=errors, text=True,
        )
        seen = []
        try:
            for line in proc.stdout:
                seen.append(line)
                if line.startswith("waiting for another stack apply against") and b.url in line:
                    break
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, (seen, out, err)
    assert "Interrupted after" in err and "every model is either old or new" in err
    assert tags(b.url) == {}
    assert set(tags(a.url)) <= {"notes:latest"}  # a finished its change, or stopped before it
