"""Tests declared in a stack: loading, selection, and errors located at file:line key."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.stack.load import StackError, load
from toolchain.stack.schema import json_schema
from toolchain.stacktest.collect import collect, select
from toolchain.stacktest.spec import DEFAULT_OPTIONS

HEAD = "tests: [tests/*.yaml]\nmodels:\n  bot:\n    from: ./w.gguf\n  Coder:\n    from: ./w.gguf\n"


def write_repo(root: Path, stack: str, files: dict[str, str] | None = None) -> Path:
    (root / ".git").mkdir()
    (root / "stacks").mkdir()
    (root / "stacks" / "stack.yaml").write_text(stack)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "stacks" / "stack.yaml"


def test_inline_and_file_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stack = HEAD + "    tests:\n      - name: greets\n        prompt: Say hi\n        options: {seed: 7}\n"
    path = write_repo(tmp_path, stack, {
        "stacks/tests/b.yaml": "coder:\n  - name: json\n    prompt: ${Q:-Give JSON}\n    format: json\n"
                               "    expect: {json_schema: {type: object}}\n",
        "stacks/tests/a.yaml": "bot:\n  - name: chat\n    system: Be short.\n    messages:\n"
                               "      - {role: user, content: hi}\n      - {role: assistant, content: Hello}\n"
                               "      - {role: user, content: bye}\n    expect: {contains: [bye]}\n",
    })
    tests = collect(load(path))
    assert [(t.model, t.name, t.origin) for t in tests] == [
        ("Coder:latest", "greets", "stacks/stack.yaml:8"),
        ("bot:latest", "chat", "stacks/tests/a.yaml:2"),
        ("Coder:latest", "json", "stacks/tests/b.yaml:2"),
    ]
    greets, chat, js = tests
    assert greets.case.request("Coder") == {
        "model": "Coder", "messages": [{"role": "user", "content": "Say hi"}],
        "options": {**DEFAULT_OPTIONS, "seed": 7},
    }
    assert chat.case.chat_messages()[0] == {"role": "system", "content": "Be short."}
    assert len(chat.case.chat_messages()) == 4
    assert js.case.request("x")["format"] == "json" and js.case.prompt == "Give JSON"
    # selection: --model (case-insensitive, defaults filled in) and -k (substring or glob)
    assert [t.name for t in select(tests, ["coder:latest"])] == ["greets", "json"]
    assert [t.name for t in select(tests, (), "BOT:LATEST::ch")] == ["chat"]
    assert [t.name for t in select(tests, (), "*:js*")] == ["json"]
    assert [t.name for t in select(tests, ["bot"], "json")] == []


ERRORS = [
    # (extra stack text under models.bot, test files, expected error)
    ("    tests:\n      - name: a\n", {}, "stacks/stack.yaml:6 models.bot.tests[0]: a test needs exactly one of: prompt, messages"),
    ("    tests:\n      - name: a\n        prompt: x\n        messages: [{role: user, content: y}]\n", {},
     "stacks/stack.yaml:6 models.bot.tests[0]: a test needs exactly one of: prompt, messages"),
    ("    tests:\n      - name: a\n        prompt: x\n        expect:\n          regex: '[a-'\n", {},
     "stacks/stack.yaml:9 models.bot.tests[0].expect.regex: invalid regex '[a-': unterminated character set at position 0"),
    ("    tests:\n      - name: a\n        prompt: x\n        expect: {max_tokens: many}\n", {},
     "stacks/stack.yaml:8 models.bot.tests[0].expect.max_tokens: Input should be a valid integer, unable to parse string as an integer"),
    ("    tests:\n      - name: a\n        prompt: x\n        expect: {containz: y}\n", {},
     "stacks/stack.yaml:8 models.bot.tests[0].expect.containz: unknown key 'containz'; did you mean 'contains'?"),
    ("    tests:\n      - name: a\n        prompt: x\n        promt: y\n", {},
     "stacks/stack.yaml:8 models.bot.tests[0].promt: unknown key 'promt'; did you mean 'prompt'?"),
    ("    tests:\n      - name: a\n        prompt: x\n        options: {num_predict: -1}\n", {},
     "stacks/stack.yaml:8 models.bot.tests[0].options: num_predict must be between 1 and 8192 in a test (a test must end)"),
    ("    tests:\n      - name: a\n        prompt: x\n        options: {temprature: 1}\n", {},
     "stacks/stack.yaml:8 models.bot.tests[0].options: unknown option 'temprature'"),
    ("    tests:\n      - name: a\n        prompt: x\n        options: {seed: one}\n", {},
     'stacks/stack.yaml:8 models.bot.tests[0].options: option "seed" must be of type integer'),
    ("    tests:\n      - name: a\n        prompt: x\n        format: {type: 7}\n", {},
     "stacks/stack.yaml:8 models.bot.tests[0].format: invalid JSON schema at type: 7 is not valid under any of the given schemas"),
    ("    tests:\n      - name: a\n        prompt: x\n      - name: a\n        prompt: y\n", {},
     "stacks/stack.yaml:8 models.bot.tests[1].name: duplicate test name 'a' for model 'bot' (first at stacks/stack.yaml:6)"),
    ("", {"stacks/tests/t.yaml": "ghost:\n  - name: a\n    prompt: x\n"},
     "stacks/tests/t.yaml:1 ghost: the stack declares no model 'ghost'; tests name a model under models:"),
    ("", {"stacks/tests/t.yaml": "bot:\n  - name: a\n    prompt: x\n    expect:\n      json_schema: {type: objekt}\n"},
     "stacks/tests/t.yaml:5 bot[0].expect.json_schema: invalid JSON schema at type: 'objekt' is not valid under any of the given schemas"),
    ("", {"stacks/tests/t.yaml": "bot:\n  - name: a\n    prompt: x\n    expect: {max_seconds: [1]}\n"},
     "stacks/tests/t.yaml:4 bot[0].expect.max_seconds: Input should be a valid number"),
    ("", {"stacks/tests/t.yaml": "bot:\n  name: a\n"}, "stacks/tests/t.yaml:1 bot: Input should be a valid list"),
    ("", {"stacks/tests/t.yaml": "- bot\n"}, "stacks/tests/t.yaml:1: a test file maps model names to lists of tests"),
    ("", {"stacks/tests/t.yaml": "bot:\n  - name: a\n    prompt: [x\n"}, "stacks/tests/t.yaml:4: invalid YAML"),
    ("", {"stacks/tests/t.yaml": "bot:\n  - name: a\n    prompt: ${NOPE_UNSET_VAR}\n"},
     "stacks/tests/t.yaml:3 bot[0].prompt: environment variable NOPE_UNSET_VAR is not set"),
    ("    tests:\n      - name: a\n        prompt: x\n",
     {"stacks/tests/t.yaml": "BOT:latest:\n  - name: a\n    prompt: x\n"},
     "stacks/tests/t.yaml:2 BOT:latest[0]: duplicate test name 'a' for model 'BOT:latest' (first at stacks/stack.yaml:6)"),
]


@pytest.mark.parametrize("extra, files, message", ERRORS)
def test_errors_name_file_line_key(tmp_path, monkeypatch, extra, files, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOPE_UNSET_VAR", raising=False)
    stack = HEAD.replace("  Coder:", extra + "  Coder:") if extra else HEAD
    files = files or {"stacks/tests/empty.yaml": ""}
    path = write_repo(tmp_path, stack, files)
    with pytest.raises(StackError) as info:
        collect(load(path))
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    "tests, message",
    [
        ("[../../outside.yaml]", "stacks/stack.yaml:1 tests[0]: ../../outside.yaml: is outside the repository"),
        ("[/etc/passwd]", "stacks/stack.yaml:1 tests[0]: /etc/passwd: must be a path relative to the stack file"),
        ("[tests/missing.yaml]", "stacks/stack.yaml:1 tests[0]: tests/missing.yaml: no such file"),
        ("[nothing/*.yaml]", "stacks/stack.yaml:1 tests[0]: nothing/*.yaml: matches no file"),
        ("tests/x.yaml", "stacks/stack.yaml:1 tests: Input should be a valid list"),
    ],
)
def test_test_file_paths(tmp_path, monkeypatch, tests, message):
    monkeypatch.chdir(tmp_path)
    path = write_repo(tmp_path, f"tests: {tests}\nmodels:\n  bot:\n    from: ./w.gguf\n", {"outside.yaml": "bot: []\n"})
    with pytest.raises(StackError) as info:
        collect(load(path))
    assert str(info.value).startswith(message), str(info.value)


def test_a_link_out_of_the_repository_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "secret.yaml").write_text("bot: []\n")
    path = write_repo(repo, "tests: [tests/*.yaml]\nmodels:\n  bot:\n    from: ./w.gguf\n")
    (repo / "stacks" / "tests").mkdir()
    (repo / "stacks" / "tests" / "t.yaml").symlink_to(tmp_path / "secret.yaml")
    with pytest.raises(StackError, match=r"stack.yaml:1 tests\[0\]: tests/\*.yaml: stacks/tests/t.yaml is outside the repository"):
        collect(load(path))


def test_scratch_names_are_reserved(tmp_path, monkeypatch):
    from toolchain.stack.desired import build

    monkeypatch.chdir(tmp_path)
    path = write_repo(tmp_path, "models:\n  corral.invalid/scratch-1/bot:\n    from: gemma3\n")
    with pytest.raises(StackError, match="stacks/stack.yaml:2 models.corral.invalid/scratch-1/bot: .* reserved for stack test"):
        build(load(path))


def test_schema_covers_tests():
    schema = json_schema()
    model = schema["$defs"]["Model"]["properties"]
    assert model["tests"]["items"]["$ref"] == "#/$defs/TestCase"
    case = schema["$defs"]["TestCase"]["properties"]
    assert {"name", "prompt", "messages", "system", "options", "format", "expect"} <= set(case)
    expect = schema["$defs"]["Expect"]["properties"]
    assert set(expect) == {"contains", "not_contains", "case_sensitive", "regex", "json_schema", "max_tokens", "max_seconds", "equals"}
    assert schema["properties"]["tests"]["type"] == "array"


def test_the_demo_stack_tests_load(monkeypatch, tmp_path):
    from tests.support.server import REPO_ROOT

    monkeypatch.setenv("GEMMA_GGUF", str(tmp_path / "gemma.gguf"))
    tests = collect(load(REPO_ROOT / "stacks/demo/stack.yaml"))
    by_model: dict[str, list[str]] = {}
    for t in tests:
        by_model.setdefault(t.model, []).append(t.name)
    assert set(by_model) == {"gemma3:270m", "support-bot:latest", "code-review:latest"}
    assert "knows what it is for" in by_model["support-bot:latest"]
    assert all(t.case.effective_options()["temperature"] == 0 for t in tests)
