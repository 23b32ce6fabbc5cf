"""Loading stack files: every bad input is one error naming file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from toolchain.stack.desired import build
from toolchain.stack.load import StackError, WorkTree, load, load_text
from toolchain.stack.schema import json_schema
from toolchain.stack.starter import STARTER

REPO = Path(__file__).resolve().parent.parent


def write(root: Path, files: dict[str, str]) -> None:
    (root / ".git").mkdir(exist_ok=True)  # marks the repository root for path confinement
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


BAD = [
    # (id, stack text, env, expected error (exact, after the file name))
    ("unknown key with suggestion", "models:\n  bot:\n    modelfil: m\n", {}, ":3 models.bot.modelfil: unknown key 'modelfil'; did you mean 'modelfile'?"),
    ("unknown top-level key", "prun: true\n", {}, ":1 prun: unknown key 'prun'; did you mean 'prune'?"),
    ("unknown key without a close match", "targets:\n  a:\n    zzz: 1\n", {}, ":3 targets.a.zzz: unknown key 'zzz'; expected one of: url, token"),
    ("missing token variable", "targets:\n  a:\n    url: http://h\n    token: ${TEAM_TOKEN}\n", {}, ":4 targets.a.token: environment variable TEAM_TOKEN is not set"),
    ("empty variable counts as missing", "targets:\n  a:\n    token: ${TEAM_TOKEN}\n", {"TEAM_TOKEN": ""}, ":3 targets.a.token: environment variable TEAM_TOKEN is not set"),
    ("pull and modelfile together", "models:\n  bot:\n    pull: bot\n    from: x\n", {}, ":2 models.bot: a model is either pulled (pull) or built (modelfile / from), not both"),
    ("model without a source", "models:\n  bot: {preload: true}\n", {}, ":2 models.bot: a model needs one of: modelfile, from, pull"),
    ("names differing only in case", "models:\n  Bot:\n    from: a\n  bot:\n    from: b\n", {}, ":4 models.bot: duplicate model name: 'bot' and 'Bot' differ only in case (names are case-insensitive)"),
    ("exact duplicate key", "models:\n  a: {from: x}\n  a: {from: y}\n", {}, ":3: duplicate key 'a'"),
    ("wrong type", "prune: maybe\n", {}, ":1 prune: Input should be a valid boolean, unable to interpret input"),
    ("negative runtime value", "runtime:\n  num_parallel: 0\n", {}, ":2 runtime.num_parallel: Input should be greater than or equal to 1"),
    ("not a mapping", "- a\n", {}, ":1: a stack file is a mapping (keys such as models:, targets:)"),
    ("bad yaml", "models: [\n", {}, ":2: invalid YAML: expected the node content, but found '<stream end>'"),
    ("wrong version", "version: 2\n", {}, ":1 version: Input should be 1"),
    ("bad keep-alive", "models:\n  bot:\n    from: x\n    keep_alive: 5 minutes\n", {},
     ':4 models.bot.keep_alive: not a keep-alive duration (time: unknown unit " minutes" in duration "5 minutes"); write e.g. 5m, 1h, 30s or -1'),
]


@pytest.mark.parametrize("text,env,expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_stack_files(tmp_path, text, env, expected):
    write(tmp_path, {"stacks/s/stack.yaml": text})
    with pytest.raises(StackError) as err:
        load(tmp_path / "stacks/s/stack.yaml", env=env)
    assert str(err.value).endswith("stack.yaml" + expected), str(err.value)


def test_interpolation_defaults_and_escapes(tmp_path):
    text = "targets:\n  a:\n    url: ${HOST:-http://h:1}\n    token: $${literal}-${TOK}\n"
    write(tmp_path, {"stack.yaml": text})
    stack = load(tmp_path / "stack.yaml", env={"TOK": "t0k"}).stack
    assert stack.targets["a"].url == "http://h:1"
    assert stack.targets["a"].token == "${literal}-t0k"


def test_lenient_interpolation_keeps_the_reference(tmp_path):
    write(tmp_path, {"stack.yaml": "targets:\n  a:\n    token: ${NOPE}\n"})
    loaded = load_text((tmp_path / "stack.yaml").read_text(), WorkTree(tmp_path), "stack.yaml", env={}, strict_env=False)
    assert loaded.stack.targets["a"].token == "${NOPE}"


MODEL_ERRORS = [
    # (id, files, expected error suffix, where the error points)
    ("modelfile outside the repository", {"s/stack.yaml": "models:\n  bot:\n    modelfile: ../../etc/Modelfile\n"},
     "s/stack.yaml:3 models.bot.modelfile: ../../etc/Modelfile: is outside the repository"),
    ("absolute modelfile path", {"s/stack.yaml": "models:\n  bot:\n    modelfile: /etc/Modelfile\n"},
     "s/stack.yaml:3 models.bot.modelfile: /etc/Modelfile: must be a path relative to the stack file, inside the repository"),
    ("missing modelfile", {"s/stack.yaml": "models:\n  bot:\n    modelfile: nope.Modelfile\n"},
     "s/stack.yaml:3 models.bot.modelfile: nope.Modelfile: no such file"),
    ("modelfile syntax error points into the Modelfile",
     {"s/stack.yaml": "models:\n  bot:\n    modelfile: ../m/bot.Modelfile\n", "m/bot.Modelfile": "FROM base\nSYSTEM hi\nBOGUS x\n"},
     'm/bot.Modelfile:3: command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter", "message", or "requires" (model bot)'),
    ("unknown parameter in a Modelfile",
     {"s/stack.yaml": "models:\n  bot:\n    modelfile: ../m/bot.Modelfile\n", "m/bot.Modelfile": "FROM base\n\nPARAMETER temprature 0.2\n"},
     "m/bot.Modelfile:3: unknown parameter 'temprature' (model bot)"),
    ("missing gguf", {"s/stack.yaml": "models:\n  bot:\n    from: ./nope.gguf\n"}, "s/stack.yaml:3 models.bot.from: ./nope.gguf: no such file"),
    ("invalid base name", {"s/stack.yaml": "models:\n  bot:\n    from: 'bad name!'\n"},
     "s/stack.yaml:3 models.bot.from: 'bad name!' is neither a file path (./x.gguf) nor a valid model name"),
    ("invalid model name", {"s/stack.yaml": "models:\n  'bad name':\n    from: base\n"}, "s/stack.yaml:2 models.bad name: invalid model name 'bad name'"),
    ("same model under two spellings", {"s/stack.yaml": "models:\n  bot:\n    from: base\n  BOT:latest:\n    from: base\n"},
     "s/stack.yaml:4 models.BOT:latest: duplicate model name: 'BOT:latest' and 'bot' are the same model (names are case-insensitive)"),
    ("pull reference naming another model", {"s/stack.yaml": "models:\n  bot:\n    pull: other:1b\n"},
     "s/stack.yaml:3 models.bot.pull: 'other:1b' names another model; the reference must name 'bot' itself (to make a variant, build it with `from: other:1b`)"),
    ("cycle", {"s/stack.yaml": "models:\n  a:\n    from: b\n  b:\n    from: a\n"}, "s/stack.yaml:2 models.a: models are built from each other in a cycle: a -> b -> a"),
]


@pytest.mark.parametrize("files,expected", [c[1:] for c in MODEL_ERRORS], ids=[c[0] for c in MODEL_ERRORS])
def test_model_errors(tmp_path, monkeypatch, files, expected):
    write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StackError) as err:
        build(load("s/stack.yaml", env={}))
    assert str(err.value) == expected


def test_starter_stack_is_valid(tmp_path):
    write(tmp_path, {"stack.yaml": STARTER})
    loaded = load(tmp_path / "stack.yaml", env={})
    assert loaded.stack.models == {} and "local" in loaded.stack.targets


def test_shipped_stacks_load(monkeypatch, tiny_gguf):
    monkeypatch.chdir(REPO)
    env = {"GEMMA_GGUF": str(tiny_gguf), "CORRAL_TOKEN": "x"}
    for name in ("demo", "team"):
        desired = build(load(f"stacks/{name}/stack.yaml", env=env))
        assert "registry.ollama.ai/library/support-bot:latest" in desired


def test_json_schema_names_every_section():
    schema = json_schema()
    assert set(schema["properties"]) == {"version", "targets", "prune", "runtime", "models", "proxy", "webui", "tests"}
    assert "from" in schema["$defs"]["Model"]["properties"]
    assert schema["$defs"]["Model"]["additionalProperties"] is False
