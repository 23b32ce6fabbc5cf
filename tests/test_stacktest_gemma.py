"""`stack test` on the demo stack with the real Gemma 3 270M model (e2e).

The demo tests pass; a SYSTEM edit in support-bot's Modelfile makes `stack test --plan` compare
that model only, flips the outcome of a `contains` test (pass -> fail: the phrase it looks for
leaves the prompt), and leaves no scratch model behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.server import REPO_ROOT, start_server
from toolchain.cli import main
from toolchain.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]  # a loaded 2-core machine answers slowly



@pytest.fixture
def demo(tmp_path, gemma_gguf, monkeypatch):
    (tmp_path / ".git").mkdir()
    for rel in ("stacks/demo/stack.yaml", "stacks/demo/tests/demo.yaml", "modelfiles/gemma3-chat.Modelfile",
                "modelfiles/support-bot.Modelfile", "modelfiles/code-review.Modelfile"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / rel, tmp_path / rel)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEMMA_GGUF", str(gemma_gguf))
    monkeypatch.setenv("CORRAL_LOCK_DIR", str(tmp_path))
    with start_server(tmp_path / "models", env={"OLLAMA_NUM_PARALLEL": "2"}) as srv:
        monkeypatch.setenv("CORRAL_URL", srv.url)
        assert main(["apply", "-f", "stacks/demo/stack.yaml", "--auto-approve"]) == 0
        yield tmp_path, srv


def run(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["test", "-f", "stacks/demo/stack.yaml", "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_demo_tests_pass_and_a_system_edit_flips_contains(demo, capsys):
    root, srv = demo
    code, doc = run(capsys)
    results = doc["targets"][0]["results"]
    assert code == 0, json.dumps(results, indent=1)
    assert {r["model"] for r in results} == {"gemma3:270m", "support-bot:latest", "code-review:latest"}

    # A SYSTEM edit: only support-bot is compared, and "knows what it is for" (which looks for a
    # phrase of the old SYSTEM, now nowhere in the prompt) passes before and fails after.
    vpn = next(r for r in results if r["test"] == "vpn token reset points to the portal")
    mf = root / "modelfiles/support-bot.Modelfile"
    mf.write_text(mf.read_text().replace("for our internal developer tools", "for the finance team's spreadsheets"))
    code, doc = run(capsys, "--plan")
    target = doc["targets"][0]
    assert {t["model"] for t in target["tests"]} == {"support-bot:latest"}, target
    flipped = next(t for t in target["tests"] if t["test"] == "knows what it is for")
    assert flipped["before"]["outcome"] == "pass" and flipped["after"]["outcome"] == "fail", json.dumps(flipped)
    assert flipped["after"]["reasons"] == ["does not contain 'internal developer tools'"]
    assert target["tests"][0]["test"] == "knows what it is for"  # changed outcomes first
    same = next(t for t in target["tests"] if t["test"] == vpn["test"])
    assert same["before"]["answer"] == vpn["answer"]  # same seed, one at a time: the answer of the plain run
    assert target["scratch"] and target["leftovers"] == []
    with Client(srv.url) as c:
        assert not [m["name"] for m in c.tags() if m["name"].startswith("corral.invalid/")]
    assert code == 1  # a proposed model fails its tests
