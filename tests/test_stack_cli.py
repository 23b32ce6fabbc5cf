"""The stack commands without a server: init, schema, and the errors that stop a plan."""

from __future__ import annotations

import json
import socket

from toolchain.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_init_writes_a_valid_starter(tmp_path, capsys):
    path = tmp_path / "team" / "stack.yaml"
    assert main(["init", str(path)]) == 0
    assert path.read_text().startswith("# yaml-language-server")
    assert main(["init", str(path)]) == 1
    assert "already exists; use --force" in capsys.readouterr().err
    assert main(["init", str(path), "--force"]) == 0


def test_schema_is_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Corral stack file" and "models" in schema["properties"]
    # The edge sections `stack render` reads, with their own keys (editors complete them).
    defs = schema["$defs"]
    assert {"proxy", "webui"} <= set(schema["properties"])
    assert {"listen", "server_name", "tls", "clients", "rate_limit", "body_limits", "timeouts"} <= set(defs["ProxyConfig"]["properties"])
    assert {"enabled", "image_tag", "public_url", "admin_email", "admin_password_env", "default_models",
            "hidden_models", "presets"} <= set(defs["WebUIConfig"]["properties"])
    assert {"name", "description", "system", "params", "hidden"} <= set(defs["Preset"]["properties"])


def test_unreachable_server_is_one_line_exit_1(tmp_path, capsys):
    port = free_port()
    (tmp_path / "stack.yaml").write_text(f"targets:\n  lab:\n    url: http://127.0.0.1:{port}\nmodels:\n  x:\n    pull: x\n")
    assert main(["plan", "-f", str(tmp_path / "stack.yaml"), "--detailed-exitcode"]) == 1
    err = capsys.readouterr().err
    assert err == f"Error: target lab: could not connect to http://127.0.0.1:{port}: is the server running?\n"
    assert main(["apply", "-f", str(tmp_path / "stack.yaml"), "--auto-approve"]) == 1
    assert "could not connect" in capsys.readouterr().err


def test_unknown_target_and_format(tmp_path, capsys):
    (tmp_path / "stack.yaml").write_text("targets:\n  gpu-1: {}\n")
    assert main(["plan", "-f", str(tmp_path / "stack.yaml"), "--target", "gpu1"]) == 1
    assert "no target named 'gpu1'; did you mean 'gpu-1'?" in capsys.readouterr().err
    assert main(["plan", "-f", str(tmp_path / "stack.yaml"), "--format", "yaml"]) == 1
    assert "unknown format 'yaml'" in capsys.readouterr().err


def test_missing_stack_file(tmp_path, capsys):
    assert main(["plan", "-f", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml not found" in capsys.readouterr().err


def test_stack_error_is_located(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack.yaml").write_text("models:\n  bot:\n    form: x\n")
    assert main(["plan"]) == 1
    assert capsys.readouterr().err == "Error: stack.yaml:3 models.bot.form: unknown key 'form'; did you mean 'from'?\n"


def test_bad_saved_plan_file(tmp_path, capsys):
    (tmp_path / "plan.json").write_text("{not json")
    assert main(["apply", str(tmp_path / "plan.json")]) == 1
    assert "cannot read saved plan" in capsys.readouterr().err


def test_shipped_schema_file_is_current(capsys):
    from pathlib import Path

    assert main(["schema"]) == 0
    shipped = Path(__file__).resolve().parent.parent / "docs" / "stack.schema.json"
    assert shipped.read_text() == capsys.readouterr().out, "regenerate with: stack schema > docs/stack.schema.json"
