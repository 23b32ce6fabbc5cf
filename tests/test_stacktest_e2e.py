"""`stack test` end to end against a real `stack serve` with the tiny random-weight GGUF.

The tiny model's answers are random text, but the same text on every run at temperature 0
with a fixed seed, so the tests here use expectations that can honestly pass and fail:
max_tokens, regex, and `equals` holding the answer of a first run.
"""

from __future__ import annotations

import json
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.cli import finish, stack_process
from tests.support.project import enter, remove_models, write_files
from tests.support.server import start_server
from toolchain.cli import main
from toolchain.client import Client

STACK = """\
targets:
  local:
    url: ${CORRAL_URL}
tests: [tests/*.yaml]
models:
  base:
    from: ${TINY_GGUF}
    modelfile: ../modelfiles/base.Modelfile
  bot:
    modelfile: ../modelfiles/bot.Modelfile
    tests:
      - name: short
        prompt: Hello there
        options: {num_predict: 8}
        expect: {max_tokens: 8}
"""
BASE_MF = '''FROM base
TEMPLATE """{{ if .System }}<sys>{{ .System }}</sys>{{ end }}{{ range .Messages }}<{{ .Role }}>{{ .Content }}</{{ .Role }}>{{ end }}"""
'''
BOT_MF = "FROM base\nSYSTEM You are a support bot.\n"
TESTS = """\
bot:
  - name: anything
    prompt: How do I reset my VPN token?
    options: {num_predict: 12}
    expect: {regex: "(?s).*"}
"""


@pytest.fixture(scope="module")
def server(shared_stack_server):
    return shared_stack_server


@pytest.fixture
def repo(tmp_path, tiny_gguf, server, monkeypatch):
    (tmp_path / ".git").mkdir()
    write_files(tmp_path, {"stacks/stack.yaml": STACK, "stacks/tests/bot.yaml": TESTS,
                           "modelfiles/base.Modelfile": BASE_MF, "modelfiles/bot.Modelfile": BOT_MF})
    enter(tmp_path, monkeypatch, CORRAL_URL=server.url, TINY_GGUF=str(tiny_gguf))
    remove_models(server.url)  # a clean server for every test
    assert main(["apply", "-f", "stacks/stack.yaml", "--auto-approve"]) == 0
    return tmp_path


def stack_test(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["test", "-f", "stacks/stack.yaml", *args])
    out, err = capsys.readouterr()
    return code, out, err


def add_test(repo: Path, text: str) -> None:
    path = repo / "stacks/tests/bot.yaml"
    path.write_text(path.read_text() + text)


def tags(server) -> list[str]:
    with Client(server.url) as c:
        return sorted(m["name"] for m in c.tags())


def test_pass_fail_and_determinism(repo, server, capsys):
    capsys.readouterr()
    code, out, _ = stack_test(capsys, "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    results = {r["test"]: r for r in doc["targets"][0]["results"]}
    assert doc["summary"] == {"pass": 2, "fail": 0, "error": 0}
    assert results["short"]["tokens"] <= 8 and results["short"]["origin"] == "stacks/stack.yaml:12"
    first = results["anything"]["answer"]
    assert first and results["anything"]["tokens"] <= 12

    # The answer of the first run, pinned with equals, is the answer of every run.
    add_test(repo, f"  - name: pinned\n    prompt: How do I reset my VPN token?\n    options: {{num_predict: 12}}\n"
                   f"    expect: {{equals: {json.dumps(first)}}}\n")
    for _ in range(2):
        code, out, _ = stack_test(capsys, "--format", "json")
        assert code == 0, out
        assert {r["answer"] for r in json.loads(out)["targets"][0]["results"] if r["test"] != "short"} == {first}

    # A failing expectation: exit 1, the reason and the answer in the table.
    add_test(repo, "  - name: too-long\n    prompt: Hello there\n    options: {num_predict: 8}\n"
                   "    expect: {max_tokens: 1, not_contains: " + json.dumps(first[:3] or "x") + "}\n")
    code, out, _ = stack_test(capsys)
    assert code == 1
    assert "too-long" in out and "✗ fail" in out and "tokens > max_tokens 1" in out
    assert "3 passed, 1 failed, 0 errors" in out

    # -k and --model narrow the run
    code, out, _ = stack_test(capsys, "-k", "pinned", "--format", "json")
    assert code == 0 and [r["test"] for r in json.loads(out)["targets"][0]["results"]] == ["pinned"]
    code, out, _ = stack_test(capsys, "--model", "base", "--format", "json")
    assert code == 0 and json.loads(out)["targets"][0]["results"] == []
    code, _, err = stack_test(capsys, "--model", "ghost")
    assert code == 2 and "--model ghost: the stack declares no such model" in err

    # JUnit: valid XML with the right counts
    code, out, _ = stack_test(capsys, "--format", "junit")
    assert code == 1
    root = ET.fromstring(out)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "1", "0")
    failed = root.findall(".//testcase[failure]")
    assert [c.get("name") for c in failed] == ["too-long"]


def test_errors_exit_2(repo, server, capsys, monkeypatch):
    # A test file error is reported with file:line before anything runs.
    add_test(repo, "  - name: bad\n    prompt: x\n    expect: {regex: '(x'}\n")
    code, out, err = stack_test(capsys)
    assert code == 2 and out == ""
    assert err.startswith("Error: stacks/tests/bot.yaml:8 bot[1].expect.regex: invalid regex '(x'")
    (repo / "stacks/tests/bot.yaml").write_text(TESTS)
    # A model the server does not have, and an option the server refuses: those tests error, the others run.
    with Client(server.url) as c:
        c.delete("bot")
    code, out, _ = stack_test(capsys, "--format", "json")
    assert code == 2
    assert {r["outcome"] for r in json.loads(out)["targets"][0]["results"]} == {"error"}
    assert "not found" in json.loads(out)["targets"][0]["results"][0]["error"]
    # An unreachable server: exit 2 with the reason.
    monkeypatch.setenv("CORRAL_URL", "http://127.0.0.1:9")
    code, out, _ = stack_test(capsys)
    assert code == 2 and "could not run the tests: could not connect" in out


def test_plan_compares_current_and_proposed_and_removes_scratch(repo, server, capsys):
    capsys.readouterr()
    code, out, _ = stack_test(capsys, "--format", "json", "-k", "anything")
    answer = json.loads(out)["targets"][0]["results"][0]["answer"]
    add_test(repo, f"  - name: pinned\n    prompt: How do I reset my VPN token?\n    options: {{num_predict: 12}}\n"
                   f"    expect: {{equals: {json.dumps(answer)}}}\n")
    # Nothing changed: no test runs, no scratch model.
    code, out, err = stack_test(capsys, "--plan", "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["tests"] == 0
    # A SYSTEM edit: the bot's tests run on the current and the proposed model.
    (repo / "modelfiles/bot.Modelfile").write_text("FROM base\nSYSTEM You are a grumpy bot that answers in riddles.\n")
    code, out, err = stack_test(capsys, "--plan", "--format", "json")
    doc = json.loads(out)
    target = doc["targets"][0]
    assert [s.startswith("corral.invalid/scratch-") for s in target["scratch"]] == [True]
    assert target["leftovers"] == [] and "creating corral.invalid/scratch-" in err
    assert tags(server) == ["base:latest", "bot:latest"]  # the scratch model is gone
    tests = {t["test"]: t for t in target["tests"]}
    assert set(tests) == {"short", "anything", "pinned"}
    pinned = tests["pinned"]
    assert pinned["before"]["answer"] == answer and pinned["before"]["outcome"] == "pass"
    assert pinned["after"]["asked"] == target["scratch"][0]
    # The prompt changed, so the random model's answer changed: the pinned answer no longer matches.
    assert pinned["after"]["answer"] != answer and pinned["after"]["outcome"] == "fail"
    assert pinned["outcome_changed"] and pinned["answer_changed"]
    assert target["tests"][0]["test"] == "pinned"  # changed outcomes first
    assert code == 1

    # Markdown: one collapsed section per model, both answers and a word diff.
    code, out, _ = stack_test(capsys, "--plan", "--format", "markdown")
    assert out.count("<details>") == 1 and "<code>bot:latest</code> (update): 1 outcome(s) changed" in out
    assert "✓ pass → ✗ fail" in out and "Word diff" in out and answer.split()[0] in out
    assert tags(server) == ["base:latest", "bot:latest"]

    # The real model is untouched: the plan still shows the update, the server still answers as before.
    assert main(["plan", "-f", "stacks/stack.yaml", "--detailed-exitcode"]) == 2
    capsys.readouterr()
    code, out, _ = stack_test(capsys, "--format", "json", "-k", "pinned")
    assert code == 0


def test_plan_removes_scratch_when_tests_error(repo, server, capsys):
    # num_ctx beyond what the server accepts: the request is refused on both models.
    add_test(repo, "  - name: refused\n    prompt: hi\n    options: {num_ctx: 100000000}\n")
    (repo / "modelfiles/bot.Modelfile").write_text("FROM base\nSYSTEM Another system.\n")
    capsys.readouterr()
    code, out, _ = stack_test(capsys, "--plan", "--format", "json")
    assert code == 2
    target = json.loads(out)["targets"][0]
    refused = next(t for t in target["tests"] if t["test"] == "refused")
    assert refused["before"]["outcome"] == "error" and refused["after"]["outcome"] == "error"
    assert len(target["scratch"]) == 1 and target["leftovers"] == []
    assert tags(server) == ["base:latest", "bot:latest"]


def test_plan_builds_scratch_variants_on_scratch_bases(repo, server, capsys):
    # The base's template changes: bot (built FROM base) is compared on a scratch copy built
    # FROM the scratch base, and both scratch models are removed.
    (repo / "modelfiles/base.Modelfile").write_text(BASE_MF.replace("<sys>", "<system>"))
    capsys.readouterr()
    code, out, _ = stack_test(capsys, "--plan", "--format", "json")
    target = json.loads(out)["targets"][0]
    assert code in (0, 1) and target["error"] is None, out
    assert [s.rsplit("/", 1)[1] for s in target["scratch"]] == ["base:latest", "bot:latest"]
    assert {t["action"] for t in target["tests"]} == {"update"}
    assert tags(server) == ["base:latest", "bot:latest"]


def test_plan_and_apply_ignore_scratch_models(repo, server, capsys):
    with Client(server.url) as c:
        for _ in c.create({"model": "corral.invalid/scratch-0000/bot:latest", "from": "bot"}):
            pass
    (repo / "stacks/stack.yaml").write_text(STACK.replace("targets:", "prune: true\ntargets:"))
    capsys.readouterr()
    assert main(["plan", "-f", "stacks/stack.yaml", "--detailed-exitcode"]) == 0
    assert main(["apply", "-f", "stacks/stack.yaml", "--auto-approve"]) == 0
    assert "corral.invalid/scratch-0000/bot:latest" in tags(server)
    # another run's scratch model (fresh, so maybe still in use) survives a --plan run
    (repo / "modelfiles/bot.Modelfile").write_text("FROM base\nSYSTEM Changed again.\n")
    capsys.readouterr()
    code, out, _ = stack_test(capsys, "--plan", "--format", "json")
    assert code == 0 and json.loads(out)["targets"][0]["swept"] == []
    assert tags(server) == ["base:latest", "bot:latest", "corral.invalid/scratch-0000/bot:latest"]


def test_sigterm_during_plan_still_removes_scratch(repo, server):
    # Many long answers keep the run busy long enough to be interrupted while scratch models exist.
    add_test(repo, "".join(f"  - name: long{i}\n    prompt: story {i}\n    options: {{num_predict: 4000, num_ctx: 8192}}\n"
                           for i in range(30)))
    (repo / "modelfiles/bot.Modelfile").write_text("FROM base\nSYSTEM Changed.\n")
    with stack_process("test", "-f", "stacks/stack.yaml", "--plan", cwd=repo) as proc:
        for _ in range(600):  # wait (bounded) for the scratch model to exist
            if any(name.startswith("corral.invalid/") for name in tags(server)) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)  # let the tests start
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc)
    assert proc.returncode == 130, err
    assert tags(server) == ["base:latest", "bot:latest"]


def test_apply_then_test(repo, server, capsys):
    (repo / "modelfiles/bot.Modelfile").write_text("FROM base\nSYSTEM Changed for apply --test.\n")
    add_test(repo, "  - name: never\n    prompt: hi\n    options: {num_predict: 4}\n    expect: {equals: not this answer}\n")
    capsys.readouterr()
    assert main(["apply", "-f", "stacks/stack.yaml", "--auto-approve", "--test"]) == 1
    out, err = capsys.readouterr()
    assert "Apply complete: 1 of 1 change(s) made." in out and "never" in out and "✗ fail" in out
    assert "Tests fail after the apply on local: bot:latest. Nothing was rolled back." in err and "git revert" in err
    assert main(["plan", "-f", "stacks/stack.yaml", "--detailed-exitcode"]) == 0  # applied, not rolled back
    (repo / "stacks/tests/bot.yaml").write_text(TESTS)
    capsys.readouterr()
    assert main(["apply", "-f", "stacks/stack.yaml", "--auto-approve", "--test"]) == 0
    assert "2 passed, 0 failed, 0 errors" in capsys.readouterr().out


@pytest.mark.parametrize("plan", [False, True], ids=["run", "plan"])
def test_server_dying_mid_run_makes_the_remaining_tests_errors(tmp_path, tiny_gguf, monkeypatch, plan):
    (tmp_path / ".git").mkdir()
    files = {"stacks/stack.yaml": STACK, "modelfiles/base.Modelfile": BASE_MF, "modelfiles/bot.Modelfile": BOT_MF,
             "stacks/tests/bot.yaml": "bot:\n" + "".join(
                 f"  - name: long{i}\n    prompt: story {i}\n    options: {{num_predict: 4000, num_ctx: 8192}}\n"
                 for i in range(30))}
    write_files(tmp_path, files)
    enter(tmp_path, monkeypatch, TINY_GGUF=str(tiny_gguf))
    srv = start_server(tmp_path / "models")
    try:
        monkeypatch.setenv("CORRAL_URL", srv.url)
        assert main(["apply", "-f", "stacks/stack.yaml", "--auto-approve"]) == 0
        if plan:
            (tmp_path / "modelfiles/bot.Modelfile").write_text("FROM base\nSYSTEM Changed.\n")
        args = ["test", "-f", "stacks/stack.yaml", "--format", "json", *(["--plan"] if plan else [])]
        with stack_process(*args, cwd=tmp_path) as proc:
            with Client(srv.url) as c:
                for _ in range(600):  # wait (bounded) until the tests are answering
                    if c.ps() or proc.poll() is not None:
                        break
                    time.sleep(0.1)
            assert proc.poll() is None
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(timeout=30)
            out, err = finish(proc)
    finally:
        srv.stop()
    assert proc.returncode == 2, err
    target = json.loads(out)["targets"][0]
    if plan:  # the server is gone: the scratch model cannot be removed, and the report says so
        results = [p["after"] for p in target["tests"]]
        assert target["leftovers"] == target["scratch"] and len(target["scratch"]) == 1
    else:
        results = target["results"]
    assert len(results) == 31  # every test is reported
    errors = [r for r in results if r["outcome"] == "error"]
    assert len(errors) >= 29 and all(r["error"] for r in errors)
