"""Desired state: Modelfiles and bases resolved into what the server must hold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.test_stack_load import write
from toolchain.stack.desired import build, looks_like_path
from toolchain.stack.load import load

K = "registry.ollama.ai/library/"


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_base_and_variant(tmp_path, tiny_gguf, monkeypatch):
    write(tmp_path, {
        "stack.yaml": (
            "models:\n"
            "  base:\n    from: ${GGUF}\n    modelfile: m/base.Modelfile\n"
            "  bot:\n    modelfile: m/bot.Modelfile\n    preload: true\n    keep_alive: 5m\n"
        ),
        "m/base.Modelfile": 'FROM ignored:latest\nTEMPLATE "{{ .Prompt }}"\nPARAMETER stop <end>\nPARAMETER temperature 1\nLICENSE MIT\n',
        "m/bot.Modelfile": "FROM base\nSYSTEM You help.\nPARAMETER temperature 0.3\nPARAMETER stop <x>\nLICENSE extra\nMESSAGE user hi\n",
    })
    monkeypatch.chdir(tmp_path)
    desired = build(load("stack.yaml", env={"GGUF": str(tiny_gguf)}))
    base, bot = desired[K + "base:latest"], desired[K + "bot:latest"]
    digest = sha(tiny_gguf)

    assert base.create == {
        "files": {tiny_gguf.name: digest},
        "template": "{{ .Prompt }}",
        "license": ["MIT"],
        "parameters": {"stop": ["<end>"], "temperature": 1.0},
    }
    assert [(u.digest, u.path) for u in base.uploads] == [(digest, str(tiny_gguf))]
    assert base.state.base == digest and base.state.complete

    # The variant: its own settings over what it inherits.
    assert bot.create["from"] == "base" and bot.after == (K + "base:latest",)
    s = bot.state
    assert s.base == digest and s.template == "{{ .Prompt }}" and s.system == "You help."
    assert s.parameters == {"stop": ("<x>",), "temperature": 0.3}
    assert s.license == "MIT\nextra" and s.messages == (("user", "hi"),) and s.complete
    assert bot.preload and bot.keep_alive == "5m"


def test_gguf_without_template_is_incomplete(tmp_path, tiny_gguf, monkeypatch):
    write(tmp_path, {"stack.yaml": "models:\n  raw:\n    from: ${GGUF}\n"})
    monkeypatch.chdir(tmp_path)
    raw = build(load("stack.yaml", env={"GGUF": str(tiny_gguf)}))[K + "raw:latest"]
    assert raw.state.template is None and not raw.state.complete


def test_variant_of_an_unmanaged_model_compares_only_what_it_sets(tmp_path, monkeypatch):
    write(tmp_path, {"stack.yaml": "models:\n  bot:\n    modelfile: bot.Modelfile\n", "bot.Modelfile": "FROM llama3.2\nSYSTEM hi\n"})
    monkeypatch.chdir(tmp_path)
    bot = build(load("stack.yaml", env={}))[K + "bot:latest"]
    assert bot.state.base is None and not bot.state.complete and bot.after == ()
    assert bot.create == {"from": "llama3.2", "system": "hi"}


def test_relative_gguf_in_modelfile(tmp_path, tiny_gguf, monkeypatch):
    (tmp_path / "w").mkdir(parents=True)
    (tmp_path / "w" / "m.gguf").write_bytes(tiny_gguf.read_bytes())
    write(tmp_path, {"stack.yaml": "models:\n  x:\n    modelfile: w/x.Modelfile\n", "w/x.Modelfile": "FROM ./m.gguf\n"})
    monkeypatch.chdir(tmp_path)
    x = build(load("stack.yaml", env={}))[K + "x:latest"]
    assert x.create == {"files": {"m.gguf": sha(tiny_gguf)}}


def test_pull_models(tmp_path, monkeypatch):
    pin = "sha256:" + "ab" * 32
    write(tmp_path, {"stack.yaml": f"models:\n  qwen:0.5b:\n    pull: qwen:0.5b@{pin}\n  Other:\n    pull: other\n    insecure: true\n"})
    monkeypatch.chdir(tmp_path)
    desired = build(load("stack.yaml", env={}))
    q, o = desired[K + "qwen:0.5b"], desired[K + "other:latest"]
    assert (q.kind, q.pull, q.pin) == ("pull", "qwen:0.5b", pin)
    assert (o.pull, o.pin, o.insecure, o.state.name) == ("other", None, True, "Other:latest")


def test_looks_like_path():
    for yes in ("./a", "../a", "/a", "~/a", "a.gguf", "C:\\a", "x/Y.GGUF"):
        assert looks_like_path(yes), yes
    for no in ("llama3.2", "user/model:tag", "hf.co/x/y:q4"):
        assert not looks_like_path(no), no


def test_modelfile_without_from_takes_the_stacks_from(tmp_path, monkeypatch):
    write(tmp_path, {
        "stack.yaml": "models:\n  x:\n    from: base:1b\n    modelfile: x.Modelfile\n  y:\n    modelfile: x.Modelfile\n",
        "x.Modelfile": "SYSTEM hi\nPARAMETER top_k 2\n",
    })
    monkeypatch.chdir(tmp_path)
    from toolchain.stack.load import StackError

    with pytest.raises(StackError) as err:
        build(load("stack.yaml", env={}))
    assert str(err.value) == "x.Modelfile: no FROM line (model y); or give the model a `from:` key in the stack"
    (tmp_path / "stack.yaml").write_text("models:\n  x:\n    from: base:1b\n    modelfile: x.Modelfile\n")
    x = build(load("stack.yaml", env={}))[K + "x:latest"]
    assert x.create == {"from": "base:1b", "system": "hi", "parameters": {"top_k": 2}}
    (tmp_path / "x.Modelfile").write_text("SYSTEM hi\nPARAMETER top_kk 2\n")
    with pytest.raises(StackError) as err:
        build(load("stack.yaml", env={}))
    assert str(err.value) == "x.Modelfile:2: unknown parameter 'top_kk' (model x)"  # the line is the file's own


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_modelfile_encodings(tmp_path, monkeypatch, encoding):
    write(tmp_path, {"stack.yaml": "models:\n  x:\n    modelfile: x.Modelfile\n"})
    (tmp_path / "x.Modelfile").write_bytes("FROM base\nSYSTEM héllo\n".encode(encoding))
    monkeypatch.chdir(tmp_path)
    assert build(load("stack.yaml", env={}))[K + "x:latest"].create == {"from": "base", "system": "héllo"}
