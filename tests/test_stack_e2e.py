"""Plan and apply end to end against a real `stack serve` (tiny GGUF weights, loopback only).

The story of the issue: a stack with a base and two Modelfile variants, plan (creates), apply,
plan again (no changes), a SYSTEM edit seen as one update in plan and in `stack diff`, prune,
saved plans refused when stale, and a second concurrent apply refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import git
import pytest

from tests.support.cli import finish, read_until, stack_process
from tests.support.project import enter, remove_models, write_files
from tests.support.tiny_gguf import write_tiny_llama
from toolchain.cli import main
from toolchain.client import Client, base_url
from toolchain.errors import APIError
from toolchain.stack.apply import apply_lock

STACK = """\
# the team's models
targets:
  local:
    url: ${CORRAL_URL}
prune: false
models:
  base:
    from: ${TINY_GGUF}
    modelfile: ../modelfiles/base.Modelfile
  support-bot:
    modelfile: ../modelfiles/support-bot.Modelfile
  code-review:
    modelfile: ../modelfiles/code-review.Modelfile
"""
BASE_MF = '''FROM base
TEMPLATE """{{ if .System }}<sys>{{ .System }}</sys>{{ end }}<user>{{ .Prompt }}</user>"""
PARAMETER stop </user>
PARAMETER stop <end>
'''
BOT_MF = "FROM base\nSYSTEM You are a support bot.\nPARAMETER temperature 0.3\nMESSAGE user hi\nMESSAGE assistant Hello!\n"
REVIEW_MF = "FROM base\nSYSTEM You review code.\nPARAMETER num_ctx 4096\nPARAMETER top_k 20\n"


@pytest.fixture(scope="module")
def server(shared_stack_server):
    return shared_stack_server


@pytest.fixture
def repo(tmp_path, tiny_gguf, server, monkeypatch):
    r = git.Repo.init(tmp_path)
    r.config_writer().set_value("user", "name", "t").set_value("user", "email", "t@example.com").release()
    files = {"stacks/stack.yaml": STACK, "modelfiles/base.Modelfile": BASE_MF,
             "modelfiles/support-bot.Modelfile": BOT_MF, "modelfiles/code-review.Modelfile": REVIEW_MF}
    write_files(tmp_path, files)
    r.index.add(list(files))
    r.index.commit("stack")
    enter(tmp_path, monkeypatch, CORRAL_URL=server.url, TINY_GGUF=str(tiny_gguf))
    remove_models(server.url)  # a clean server for every test
    return r


def stack(command: str, *args: str) -> int:
    return main([command, "-f", "stacks/stack.yaml", *args])


def edit(repo, path: str, old: str, new: str, commit: bool = True) -> None:
    full = Path(repo.working_tree_dir) / path
    full.write_text(full.read_text().replace(old, new))
    if commit:
        repo.index.add([path])
        repo.index.commit(f"edit {path}")


def test_plan_apply_converge_edit_prune(repo, server, capsys):
    # 1. A fresh server: three creates.
    assert stack("plan", "--detailed-exitcode") == 2
    out = capsys.readouterr().out
    assert "Plan: 3 to create, 0 to update, 0 to replace, 0 to delete." in out
    assert out.index("# base:latest will be created") < out.index("# code-review:latest will be created")

    # 2. Apply; the server now lists the models.
    assert stack("apply", "--auto-approve") == 0
    assert "Apply complete: 3 of 3 change(s) made." in capsys.readouterr().out
    with Client(server.url) as c:
        assert sorted(m["name"] for m in c.tags()) == ["base:latest", "code-review:latest", "support-bot:latest"]
        assert c.show("support-bot")["system"] == "You are a support bot."

    # 3. Plan again: nothing to do (exit 0), and apply is a no-op.
    assert stack("plan", "--detailed-exitcode") == 0
    assert "No changes. Every server matches the stack." in capsys.readouterr().out
    assert stack("apply", "--auto-approve") == 0
    assert "Apply complete" not in capsys.readouterr().out

    # 4. Edit one SYSTEM line: one update, in plan and in `stack diff`.
    edit(repo, "modelfiles/support-bot.Modelfile", "a support bot", "a friendly support bot")
    assert stack("plan", "--detailed-exitcode") == 2
    out = capsys.readouterr().out
    assert "Plan: 0 to create, 1 to update, 0 to replace, 0 to delete." in out
    assert "-You are a support bot.\n" in out and "+You are a friendly support bot.\n" in out
    assert main(["diff", "HEAD~1", "HEAD", "-f", "stacks/stack.yaml", "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert "Plan: 0 to create, 1 to update, 0 to replace, 0 to delete." in out and "support-bot:latest will be updated" in out

    # 5. A parameter edit is shown as a typed value change.
    edit(repo, "modelfiles/support-bot.Modelfile", "temperature 0.3", "temperature 0.2", commit=False)
    assert stack("plan") == 0
    assert "~ PARAMETER temperature 0.3 → 0.2" in capsys.readouterr().out
    assert stack("apply", "--auto-approve") == 0
    capsys.readouterr()
    assert stack("plan", "--detailed-exitcode") == 0

    # 6. A model made by hand is kept while prune is off, deleted with prune on.
    with Client(server.url) as c:
        for _ in c.create({"model": "stray", "from": "base"}):
            pass
    assert stack("plan", "--detailed-exitcode") == 0
    assert "kept because prune is off: stray:latest" in capsys.readouterr().out
    edit(repo, "stacks/stack.yaml", "prune: false", "prune: true")
    assert stack("plan", "--detailed-exitcode") == 2
    out = capsys.readouterr().out
    assert "# stray:latest will be deleted" in out and "Plan: 0 to create, 0 to update, 0 to replace, 1 to delete." in out
    assert stack("apply", "--auto-approve") == 0
    capsys.readouterr()
    with Client(server.url) as c:
        assert "stray:latest" not in [m["name"] for m in c.tags()]
    assert stack("plan", "--detailed-exitcode") == 0


def test_new_base_weights_replace_the_base_and_its_variants(repo, server, tmp_path, capsys):
    assert stack("apply", "--auto-approve") == 0
    other = write_tiny_llama(tmp_path / "other.gguf", seed=7)
    (tmp_path / "other.gguf").rename(tmp_path / "stacks" / "other.gguf")
    edit(repo, "stacks/stack.yaml", "from: ${TINY_GGUF}", "from: ./other.gguf", commit=False)
    capsys.readouterr()
    assert stack("plan", "--format", "json", "--detailed-exitcode") == 2
    doc = json.loads(capsys.readouterr().out)
    actions = {c["model"]: c["action"] for c in doc["targets"][0]["changes"]}
    assert actions == {"base:latest": "replace", "support-bot:latest": "replace", "code-review:latest": "replace"}
    assert stack("apply", "--auto-approve") == 0
    capsys.readouterr()
    assert stack("plan", "--detailed-exitcode") == 0
    assert other.name == "other.gguf"


def test_saved_plan_is_applied_exactly_or_refused_when_stale(repo, server, tiny_gguf, capsys):
    assert stack("plan", "--out", "plan.json") == 0
    assert "Saved the plan to plan.json" in capsys.readouterr().out
    # The server changes after planning: the saved plan is refused and nothing is applied.
    digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    with Client(server.url) as c:
        c.create_blob(digest, tiny_gguf.read_bytes())
        for _ in c.create({"model": "intruder", "files": {"t.gguf": digest}}):
            pass
    assert main(["apply", "plan.json"]) == 1
    assert "saved plan is stale" in capsys.readouterr().err
    with Client(server.url) as c:
        assert [m["name"] for m in c.tags()] == ["intruder:latest"]
    # A fresh saved plan is applied exactly, without a prompt.
    assert stack("plan", "--out", "plan.json") == 0
    assert main(["apply", "plan.json"]) == 0
    assert "Apply complete: 3 of 3 change(s) made." in capsys.readouterr().out
    assert stack("plan", "--detailed-exitcode") == 0


def test_second_apply_is_refused_while_one_runs(repo, server, capsys):
    with apply_lock(base_url(server.url)):
        assert stack("apply", "--auto-approve") == 1
    err = capsys.readouterr().err
    assert "another stack apply is running against" in err and "wait for it to finish" in err
    with Client(server.url) as c:
        assert c.tags() == []  # nothing was applied


def test_apply_refuses_without_confirmation_when_not_a_terminal(repo, server, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert stack("apply") == 1
    assert "use --auto-approve" in capsys.readouterr().err


def test_a_failure_midway_leaves_each_model_old_or_new(repo, server, capsys):
    # "zz-broken" is built from a model that exists nowhere: its create fails after the others.
    (Path(repo.working_tree_dir) / "stacks/stack.yaml").write_text(STACK + "  zz-broken:\n    from: no-such-model:1b\n")
    assert stack("apply", "--auto-approve") == 1
    err = capsys.readouterr().err
    assert "local: creating zz-broken:latest failed:" in err and "3 of 4 changes made" in err
    with Client(server.url) as c:
        assert sorted(m["name"] for m in c.tags()) == ["base:latest", "code-review:latest", "support-bot:latest"]
    assert stack("plan", "--detailed-exitcode") == 2
    out = capsys.readouterr().out
    assert "Plan: 1 to create, 0 to update, 0 to replace, 0 to delete." in out and "# zz-broken:latest will be created" in out


def test_preload(repo, server, capsys):
    edit(repo, "stacks/stack.yaml", "modelfile: ../modelfiles/support-bot.Modelfile", "modelfile: ../modelfiles/support-bot.Modelfile\n    preload: true\n    keep_alive: 1m", commit=False)
    assert stack("apply", "--auto-approve") == 0
    captured = capsys.readouterr()
    assert "preloading support-bot:latest" in captured.out
    with Client(server.url) as c:
        try:
            running = [m["name"] for m in c.ps()]
        except APIError as exc:  # a server without the inference routes: the preload is only a warning
            assert exc.status == 404
            assert "Warning: local: could not preload support-bot:latest" in captured.err
        else:
            assert "support-bot:latest" in running and "Warning" not in captured.err


def test_one_unreachable_target_means_nothing_is_applied(repo, server, capsys):
    from tests.test_stack_cli import free_port

    # the reachable target comes first: planning every target before applying any protects it
    text = STACK.replace("    url: ${CORRAL_URL}\n", f"    url: ${{CORRAL_URL}}\n  gone:\n    url: http://127.0.0.1:{free_port()}\n")
    (Path(repo.working_tree_dir) / "stacks/stack.yaml").write_text(text)
    assert stack("apply", "--auto-approve") == 1
    assert "Error: target gone: could not connect to" in capsys.readouterr().err
    with Client(server.url) as c:
        assert c.tags() == []


def test_markdown_plan_for_a_pull_request(repo, server, capsys):
    assert stack("plan", "--format", "markdown", "--target", "local") == 0
    md = capsys.readouterr().out
    assert md.startswith("### Corral plan\n\n**Plan: 3 to create, 0 to update, 0 to replace, 0 to delete.**\n")
    assert "| `+` | `support-bot:latest` | create | not on the server |" in md


def test_ctrl_c_while_waiting_for_the_lock(repo, server, tmp_path):
    args = ["apply", "-f", "stacks/stack.yaml", "--auto-approve", "--lock-timeout", "120"]
    with apply_lock(base_url(server.url)), open(tmp_path / "err.txt", "w") as errors, \
            stack_process(*args, cwd=repo.working_tree_dir, stderr=errors) as proc:
        seen = read_until(proc, "waiting for another stack apply against")
        proc.send_signal(signal.SIGINT)
        out, _ = finish(proc, timeout=60)
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, (seen, err)
    assert "Interrupted after 0 change(s); every model is either old or new." in err, (out, err)
    with Client(server.url) as c:
        assert c.tags() == []


def test_an_apply_that_waited_for_another_is_refused_if_the_server_changed(repo, server, tiny_gguf, capsys):
    from toolchain.stack.apply import StalePlanError, apply_plan
    from toolchain.stack.load import load
    from toolchain.stack.targets import plan_stack

    plans = plan_stack(load("stacks/stack.yaml"))  # planned while "another apply" is about to run
    assert stack("apply", "--auto-approve") == 0  # the other apply
    with Client(server.url) as c, pytest.raises(StalePlanError, match="plan is stale: the models on local"):
        apply_plan(plans[0], c, echo=lambda _: None)


def test_saved_plan_with_a_missing_weights_file(repo, server, tmp_path, tiny_gguf, capsys):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes() + b"\0")  # other weights, not yet on the server
    edit(repo, "stacks/stack.yaml", "from: ${TINY_GGUF}", f"from: {copy}", commit=False)
    assert stack("plan", "--out", "plan.json") == 0
    copy.unlink()
    assert main(["apply", "plan.json"]) == 1
    assert f"{copy}: the file to upload is missing" in capsys.readouterr().err
    with Client(server.url) as c:
        assert c.tags() == []


@pytest.mark.e2e
def test_ctrl_c_during_an_upload_leaves_every_model_old_or_new(repo, server, gemma_gguf, capsys, monkeypatch):
    """Interrupt while the real Gemma weights (~250 MB) are being uploaded, then converge."""
    args = ["apply", "-f", "stacks/stack.yaml", "--auto-approve"]
    with stack_process(*args, cwd=repo.working_tree_dir, env={"TINY_GGUF": str(gemma_gguf)},
                       stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
            if line.strip().startswith("uploading "):
                proc.send_signal(signal.SIGINT)
                break
        out, _ = finish(proc)
    assert proc.returncode == 130, out
    assert "Interrupted after" in out and "every model is either old or new" in out
    with Client(server.url) as c:
        for m in c.tags():  # whatever exists is complete
            assert c.show(m["name"])["template"].startswith("{{ if .System }}")
    monkeypatch.setenv("TINY_GGUF", str(gemma_gguf))
    assert stack("plan", "--detailed-exitcode") == 2
    assert stack("apply", "--auto-approve") == 0
    capsys.readouterr()
    assert stack("plan", "--detailed-exitcode") == 0
