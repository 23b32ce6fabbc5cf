"""Ollama's own template test vectors (shared/ollama-vectors/templates.json): every case renders
exactly, through the prompt builder and through `stack prompt`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain.cli import main
from toolchain.prompt import chat_prompt

VECTORS = Path(os.environ.get("CORRAL_VECTORS", "/work/shared/ollama-vectors")) / "templates.json"
REPO = Path(__file__).resolve().parents[1]

if not VECTORS.exists():  # pragma: no cover - the vectors live outside the repo
    pytest.skip(f"{VECTORS} not present", allow_module_level=True)

CASES = json.loads(VECTORS.read_text(encoding="utf-8"))
IDS = [f"{c['template_name']}:{c['case']}" for c in CASES]


def _matches(got: str, case: dict) -> bool:
    # Ollama's test drops one trailing space from these templates' output before comparing
    if case["trailing_space_ok"] and got.endswith(" "):
        got = got[:-1]
    return got == case["expect"]


def test_all_sixty_cases_are_here():
    assert len(CASES) == 60


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vector_prompt_builder(case):
    got = chat_prompt(case["template"], case["messages"], num_ctx=1 << 20, count_tokens=lambda s: len(s.split()))
    assert _matches(got, case), (got, case["expect"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vector_stack_prompt(case, tmp_path, capsys):
    tmpl = tmp_path / "template.gotmpl"
    msgs = tmp_path / "messages.json"
    tmpl.write_bytes(case["template"].encode("utf-8"))
    msgs.write_text(json.dumps(case["messages"]), encoding="utf-8")
    assert main(["prompt", "--template", str(tmpl), "--messages", str(msgs)]) == 0
    out = capsys.readouterr()
    assert _matches(out.out, case), (out.out, case["expect"])
    assert out.err == ""


def test_stack_prompt_process_writes_exact_bytes(tmp_path):
    case = next(c for c in CASES if c["expect"].endswith("\n\n"))  # trailing newlines must survive
    (tmp_path / "t.gotmpl").write_text(case["template"], encoding="utf-8", newline="")
    (tmp_path / "m.json").write_text(json.dumps(case["messages"]), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain.cli", "prompt", "--template", "t.gotmpl", "--messages", "m.json"],
        cwd=tmp_path, capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == case["expect"].encode("utf-8")


CLI_ERRORS = [
    ("bad template", "{{ if }}", "[]", "template: line 1, column 7: missing value for if"),
    ("not json", "{{ .Prompt }}", "[{", "is not valid JSON"),
    ("not a list", "{{ .Prompt }}", '{"role": "user"}', "must be a JSON array of objects"),
    ("no role", "{{ .Prompt }}", '[{"content": "x"}]', 'message 0 has no string "role"'),
    ("content not text", "{{ .Prompt }}", '[{"role": "user", "content": 3}]', '"content" must be a string'),
    ("exec error", "{{ range .Messages }}{{ .Nope }}{{ end }}", '[{"role": "user", "content": "x"}]', "can't evaluate field Nope"),
]


@pytest.mark.parametrize("name,template,messages,message", CLI_ERRORS, ids=[c[0] for c in CLI_ERRORS])
def test_stack_prompt_errors_are_one_line(name, template, messages, message, tmp_path, capsys):
    (tmp_path / "t").write_text(template, encoding="utf-8")
    (tmp_path / "m.json").write_text(messages, encoding="utf-8")
    assert main(["prompt", "--template", str(tmp_path / "t"), "--messages", str(tmp_path / "m.json")]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert message in out.err
    assert out.err.count("\n") == 1


def test_stack_prompt_system_and_tools(tmp_path, capsys):
    (tmp_path / "t").write_text(
        "{{ if .System }}S={{ .System }};{{ end }}{{ range .Tools }}T={{ .Function.Name }};{{ end }}"
        "{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}",
        encoding="utf-8",
    )
    (tmp_path / "m.json").write_text('[{"role": "USER", "content": "hi"}]', encoding="utf-8")
    (tmp_path / "tools.json").write_text('[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]')
    args = ["prompt", "--template", str(tmp_path / "t"), "--messages", str(tmp_path / "m.json")]
    assert main(args + ["--system", "sys", "--tools", str(tmp_path / "tools.json")]) == 0
    assert capsys.readouterr().out == "S=sys;T=f;system=sys;user=hi;"
