"""`stack diff`: the effect of a commit on a stack, from git alone."""

from __future__ import annotations

import json

import git
import pytest

from toolchain.cli import main

STACK = """\
models:
  base:
    from: ${GGUF}
    modelfile: modelfiles/base.Modelfile
  bot:
    modelfile: modelfiles/bot.Modelfile
"""
BASE_MF = 'FROM base\nTEMPLATE "{{ .Prompt }}"\nPARAMETER stop <end>\n'
BOT_MF = "FROM base\nSYSTEM You are a support bot.\nPARAMETER temperature 0.3\n"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    r = git.Repo.init(tmp_path)
    r.config_writer().set_value("user", "name", "t").set_value("user", "email", "t@example.com").release()
    (tmp_path / "modelfiles").mkdir()
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks/stack.yaml").write_text(STACK.replace("modelfiles/", "../modelfiles/"))
    (tmp_path / "modelfiles/base.Modelfile").write_text(BASE_MF)
    (tmp_path / "modelfiles/bot.Modelfile").write_text(BOT_MF)
    r.index.add(["stacks/stack.yaml", "modelfiles/base.Modelfile", "modelfiles/bot.Modelfile"])
    r.index.commit("first")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GGUF", raising=False)  # a review needs no local weights or secrets
    return r


def commit(repo, path, text, message="change"):
    full = f"{repo.working_tree_dir}/{path}"
    with open(full, "w") as f:
        f.write(text)
    repo.index.add([path])
    repo.index.commit(message)


def test_system_edit_is_one_update(repo, capsys):
    commit(repo, "modelfiles/bot.Modelfile", BOT_MF.replace("a support bot", "a helpful support bot"))
    code = main(["diff", "HEAD~1", "HEAD", "-f", "stacks/stack.yaml", "--detailed-exitcode"])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "# bot:latest will be updated in-place (the Modelfile differs)" in out
    assert "-You are a support bot.\n" in out and "+You are a helpful support bot.\n" in out
    assert "Plan: 0 to create, 1 to update, 0 to replace, 0 to delete." in out
    assert "base:latest will" not in out


def test_base_change_propagates_to_variants(repo, capsys):
    commit(repo, "modelfiles/base.Modelfile", BASE_MF.replace("<end>", "<stop>"))
    assert main(["diff", "HEAD~1", "HEAD", "-f", "stacks/stack.yaml", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    changes = {c["model"]: c for c in doc["targets"][0]["changes"]}
    assert changes["base:latest"]["action"] == "update"
    assert changes["bot:latest"]["action"] == "update"  # it inherits the stop list
    assert changes["bot:latest"]["reason"] == "inherits changes from base"
    assert changes["base:latest"]["reason"] == "the Modelfile differs"
    assert changes["bot:latest"]["diff"] == [{"field": "parameter", "name": "stop", "before": ["<end>"], "after": ["<stop>"]}]


def test_added_and_removed_models(repo, capsys):
    stack = (repo.working_tree_dir + "/stacks/stack.yaml")
    text = open(stack).read()
    commit(repo, "stacks/stack.yaml", text.replace("  bot:\n    modelfile: ../modelfiles/bot.Modelfile\n", "") + "  coder:\n    pull: qwen2.5-coder:1.5b\n    insecure: false\n".replace("coder:\n", "qwen2.5-coder:1.5b:\n"))
    assert main(["diff", "HEAD~1", "HEAD", "-f", "stacks/stack.yaml"]) == 0
    out = capsys.readouterr().out
    assert "# qwen2.5-coder:1.5b will be pulled (pull reference changed)" in out or "qwen2.5-coder:1.5b will be pulled" in out
    assert "# bot:latest will be deleted (removed from the stack)" in out


def test_working_tree_against_head(repo, capsys):
    with open(repo.working_tree_dir + "/modelfiles/bot.Modelfile", "a") as f:
        f.write("PARAMETER num_ctx 4096\n")
    assert main(["diff", "-f", "stacks/stack.yaml"]) == 0
    out = capsys.readouterr().out
    assert "+ PARAMETER num_ctx 4096" in out and "HEAD..working tree" in out


def test_no_changes(repo, capsys):
    assert main(["diff", "HEAD", "HEAD", "-f", "stacks/stack.yaml", "--detailed-exitcode"]) == 0
    assert "No changes" in capsys.readouterr().out


def test_unknown_revision(repo, capsys):
    assert main(["diff", "nope", "HEAD", "-f", "stacks/stack.yaml"]) == 1
    assert "unknown git revision 'nope'" in capsys.readouterr().err
