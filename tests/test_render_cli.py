"""`stack render` end to end through the CLI entry point: load a stack, write, check, refuse."""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap

import pytest

from toolchain.cli import main

ENV = {"ALICE_TOKEN": "alice-0123456789abcdef", "OPS_TOKEN": "ops-0123456789abcdef-x"}

STACK = """\
version: 1
targets:
  a: {url: "http://127.0.0.1:11434"}
  b: {url: "127.0.0.1:11435"}
models:
  tiny: {from: ./tiny.gguf}
proxy:
  listen: "127.0.0.1:18080"
  clients:
    - {name: alice, token_env: ALICE_TOKEN}
    - {name: ops, scope: admin, token_env: OPS_TOKEN}
"""


def webui_section(tmp_path, preset: str) -> str:
    """A `webui:` section with one preset (its secret key file written into tmp_path)."""
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123\n")
    return textwrap.dedent(
        f"""\
        webui:
          public_url: http://chat.localhost
          client: alice
          admin_email: a@example.org
          admin_password_env: PW
          secret_key_file: {key}
          presets:
            - {preset}
        """
    )


@pytest.fixture
def stack(tmp_path, monkeypatch):
    path = tmp_path / "stack.yaml"
    path.write_text(STACK)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return path


def test_render_writes_beside_the_stack_and_check_passes(stack, capsys):
    assert main(["render", "-f", str(stack)]) == 0
    out = stack.parent / "rendered"
    assert "Rendered 8 files into" in capsys.readouterr().out
    conf = (out / "nginx" / "corral.conf").read_text()
    assert "server 127.0.0.1:11434 max_fails=2" in conf and "server 127.0.0.1:11435 max_fails=2" in conf
    assert stat.S_IMODE((out / "nginx" / "corral-tokens.conf").stat().st_mode) == 0o600
    assert ENV["OPS_TOKEN"] not in conf
    assert main(["render", "-f", str(stack), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_catches_a_hand_edit_and_a_stack_change(stack, capsys):
    out = stack.parent / "site"
    assert main(["render", "-f", str(stack), "--out", str(out)]) == 0
    conf = out / "nginx" / "corral.conf"
    conf.write_text(conf.read_text().replace("limit_conn corral_streams 4;", "limit_conn corral_streams 40;"))
    capsys.readouterr()
    assert main(["render", "-f", str(stack), "--out", str(out), "--check"]) == 1
    captured = capsys.readouterr()
    assert "-        limit_conn corral_streams 40;\n+        limit_conn corral_streams 4;\n" in captured.out
    assert "rendered files differ" in captured.err
    assert main(["render", "-f", str(stack), "--out", str(out)]) == 0
    stack.write_text(STACK.replace('  b: {url: "127.0.0.1:11435"}\n', ""))
    assert main(["render", "-f", str(stack), "--out", str(out), "--check"]) == 1
    assert "-    server 127.0.0.1:11435 max_fails=2 fail_timeout=10s;\n" in capsys.readouterr().out


def test_missing_token_variable_is_one_line_and_writes_nothing(stack, capsys, monkeypatch):
    monkeypatch.delenv("OPS_TOKEN")
    assert main(["render", "-f", str(stack)]) == 1
    err = capsys.readouterr().err
    assert err == "Error: environment variable OPS_TOKEN (token of proxy client 'ops') is not set\n"
    assert sorted(os.listdir(stack.parent)) == ["stack.yaml"]


def test_an_unset_variable_in_what_render_reads_is_an_error_never_a_literal(stack, capsys, monkeypatch, tmp_path):
    """Target tokens and models' sources may be unset (CI renders without them); a variable in
    the proxy, webui or a target's URL is needed, and `${NAME}` is never written into a file."""
    monkeypatch.setenv("PW", "a-long-admin-password")
    monkeypatch.delenv("PROMPT", raising=False)
    monkeypatch.delenv("TOKEN_OF_A", raising=False)
    text = STACK.replace('  a: {url: "http://127.0.0.1:11434"}', '  a: {url: "http://127.0.0.1:11434", token: "${TOKEN_OF_A}"}')
    text = text.replace("tiny: {from: ./tiny.gguf}", "tiny: {from: \"${TINY_GGUF}\"}") + webui_section(
        tmp_path, '{id: helper, model: tiny, name: Helper, system: "${PROMPT}"}'
    )
    stack.write_text(text)
    for args in (["render", "-f", str(stack)], ["render", "-f", str(stack), "--check"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        assert err.endswith("stack.yaml:19 webui.presets[0].system: environment variable PROMPT is not set\n"), err
    assert not (stack.parent / "rendered").exists()
    monkeypatch.setenv("PROMPT", "Be brief.")
    assert main(["render", "-f", str(stack)]) == 0  # TOKEN_OF_A and TINY_GGUF still unset
    models = json.loads((stack.parent / "rendered" / "open-webui" / "models.json").read_text())
    assert models["models"][0]["params"] == {"system": "Be brief."}
    stack.write_text(text.replace('"http://127.0.0.1:11434"', '"${GPU_1_URL}"'))
    assert main(["render", "-f", str(stack), "--check"]) == 1
    assert "targets.a.url: environment variable GPU_1_URL is not set" in capsys.readouterr().err


def test_foreign_output_directory_is_refused(stack, capsys):
    out = stack.parent / "etc"
    out.mkdir()
    (out / "passwd").write_text("root:x:0:0\n")
    assert main(["render", "-f", str(stack), "--out", str(out)]) == 1
    assert "contains files Corral did not write (passwd); refusing to overwrite" in capsys.readouterr().err
    assert os.listdir(out) == ["passwd"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (("127.0.0.1:11435", "127.0.0.1:99999"), "is not a valid host:port"),
        (('url: "http://127.0.0.1:11434"', 'url: "https://gpu-1:11434/x"'), "cannot sit behind the rendered nginx"),
        (("{name: ops,", "{name: alice,"), "two proxy clients are named 'alice'"),
        (("token_env: OPS_TOKEN", "token_env: ALICE_TOKEN"), "share the token variable ALICE_TOKEN"),
    ],
)
def test_bad_stacks_fail_with_a_located_message(stack, capsys, edit, message):
    stack.write_text(STACK.replace(*edit))
    assert main(["render", "-f", str(stack)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert "stack.yaml" in err


def test_preset_for_an_undeclared_model(stack, capsys, tmp_path):
    stack.write_text(STACK + webui_section(tmp_path, "{id: coder, model: qwen2.5-coder:7b, name: Coder}"))
    assert main(["render", "-f", str(stack)]) == 1
    err = capsys.readouterr().err
    assert "preset 'coder' is for model 'qwen2.5-coder:7b', which the stack does not declare" in err


def test_the_team_stacks_committed_rendering_is_current_and_checked_without_secrets(tmp_path, capsys):
    """stacks/team/rendered/ is committed, as a team does; `--check` (the CI step of
    .github/workflows/stack.yml) compares it with the stack with no secret and no TLS file."""
    from tests.support.server import REPO_ROOT
    from tests.support.team_stack import COMMITTED, STACK

    assert main(["render", "-f", str(STACK), "--check"]) == 0, (
        capsys.readouterr().out + "\nregenerate with: python -m tests.support.team_stack"
    )
    secret = json.loads((COMMITTED / ".corral-render.json").read_text())["secret"]
    assert all(f"/{rel}\n" in (COMMITTED / ".gitignore").read_text() for rel in secret)  # never committed
    # In a checkout of its own, a hand edit is a diff.
    shutil.copytree(STACK.parent, tmp_path / "team")
    shutil.copytree(REPO_ROOT / "modelfiles", tmp_path / "modelfiles")
    conf = tmp_path / "team" / "rendered" / "nginx" / "corral.conf"
    conf.write_text(conf.read_text().replace("proxy_read_timeout 600s;", "proxy_read_timeout 60s;"))
    capsys.readouterr()
    assert main(["render", "-f", str(tmp_path / "team" / "stack.yaml"), "--check"]) == 1
    out = capsys.readouterr().out
    assert "-    proxy_read_timeout 60s;\n+    proxy_read_timeout 600s;\n" in out
    assert "+    server 10.0.0.11:11434 max_fails=2 fail_timeout=10s;" not in out  # only the edit differs
    assert "listen 0.0.0.0:443 ssl http2;" in (COMMITTED / "nginx" / "corral.conf").read_text()


def test_ci_checks_the_rendering_of_the_stack_it_plans():
    from ruamel.yaml import YAML

    from tests.support.server import REPO_ROOT

    workflow = YAML(typ="safe").load((REPO_ROOT / ".github" / "workflows" / "stack.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["plan"]["steps"]]
    assert any('stack render -f "$STACK_FILE" --check' in run for run in runs), runs


def test_render_changes_for_stack_plan(stack):
    from toolchain.render.from_stack import render_changes
    from toolchain.stack.load import load

    loaded = load(stack, env=ENV)
    assert ("create", "nginx/corral.conf") in render_changes(loaded)
    assert main(["render", "-f", str(stack)]) == 0
    assert render_changes(loaded) == []
    stack.write_text(STACK.replace("127.0.0.1:18080", "127.0.0.1:18081"))
    changed = render_changes(load(stack, env=ENV))
    assert changed == [("update", "compose.yaml"), ("update", "compose/corral.conf"), ("update", "nginx/corral.conf")]


def test_stack_plan_lists_rendered_files_that_would_change(stack_server, tmp_path, monkeypatch, capsys):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "stack.yaml"
    text = textwrap.dedent(f"""\
        version: 1
        targets:
          a: {{url: "{stack_server.url}"}}
        models: {{}}
        proxy:
          listen: "127.0.0.1:18080"
          clients:
            - {{name: alice, token_env: ALICE_TOKEN}}
        """)
    path.write_text(text)
    assert main(["plan", "-f", str(path), "--detailed-exitcode"]) == 2  # no model changes, files to render
    out = capsys.readouterr().out
    assert "Rendered files that `stack render` would change:" in out
    assert "  + nginx/corral.conf" in out
    assert main(["render", "-f", str(path)]) == 0
    capsys.readouterr()
    assert main(["plan", "-f", str(path), "--detailed-exitcode"]) == 0
    assert "Rendered files" not in capsys.readouterr().out
    path.write_text(text.replace("18080", "18081"))
    assert main(["plan", "-f", str(path), "--detailed-exitcode"]) == 2
    assert "  ~ nginx/corral.conf" in capsys.readouterr().out


def test_stack_plan_json_and_markdown_list_rendered_files(stack_server, tmp_path, monkeypatch, capsys):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "stack.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        targets:
          a: {{url: "{stack_server.url}"}}
        models: {{}}
        proxy:
          listen: "127.0.0.1:18080"
          clients:
            - {{name: alice, token_env: ALICE_TOKEN}}
        """))
    saved = tmp_path / "plan.json"
    assert main(["plan", "-f", str(path), "--format", "json", "--out", str(saved), "--detailed-exitcode"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["changed"] is True and doc["summary"]["create"] == 0
    assert {"action": "create", "path": "nginx/corral.conf"} in doc["rendered_files"]
    assert doc["webui_presets"] is None  # no webui section, nothing compared
    assert "rendered_files" not in json.loads(saved.read_text())  # a saved plan is what apply performs: models
    assert main(["plan", "-f", str(path), "--format", "markdown"]) == 0
    assert "- `+` `nginx/corral.conf`\n" in capsys.readouterr().out
    assert main(["render", "-f", str(path)]) == 0
    capsys.readouterr()
    assert main(["plan", "-f", str(path), "--format", "json", "--detailed-exitcode"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["changed"] is False and doc["rendered_files"] == []
