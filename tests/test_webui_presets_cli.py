"""`stack plan` / `stack apply` reconciling Open WebUI's presets, through the CLI, with a stand-in UI.

The real Open WebUI 0.12.4 runs in tests/test_webui_e2e.py (marker `webui`, a 2.9 GB install);
this module needs none of it: a loopback stand-in answers the two routes Corral calls with an
admin API key (`GET /api/v1/models/all`, `POST /api/v1/models/sync`) as Open WebUI does, so the
wiring is checked in every run: the plan lists preset changes in each format, apply syncs the
rendered `models.json` after the models, a saved plan and `--target` leave the UI alone, an unset
key is a warning and a refused one an error.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from toolchain.cli import main

KEY = "sk-0123456789abcdef0123456789abcdef"


class FakeOpenWebUI:
    """The model-record routes of Open WebUI 0.12.x, for one admin key."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.calls: list[tuple[str, str]] = []
        self.synced: list[dict] = []
        ui = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> None:
                ui.calls.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(401, {"detail": "Your session has expired or the token is invalid."})
                if (self.command, self.path) == ("GET", "/api/v1/models/all"):
                    return self._send(200, ui.records)
                if (self.command, self.path) == ("POST", "/api/v1/models/sync"):
                    ui.synced.append(body)
                    ui.records = [dict(m, user_id="admin-id", created_at=1, updated_at=1) for m in body["models"]]
                    return self._send(200, ui.records)
                return self._send(404, {"detail": "Not Found"})

            do_GET = do_POST = _route

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ui():
    stray = {"id": "stray", "name": "Made by hand", "base_model_id": "tiny:latest", "params": {}, "meta": {},
             "access_grants": [], "is_active": True}
    fake = FakeOpenWebUI([stray])
    yield fake
    fake.close()


@pytest.fixture
def stack(tmp_path, stack_server, tiny_gguf, ui, monkeypatch):
    (tmp_path / ".git").mkdir()
    shutil.copy(tiny_gguf, tmp_path / "tiny.gguf")
    key_file = tmp_path / "webui-secret-key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    path = tmp_path / "stack.yaml"
    path.write_text(textwrap.dedent(f"""\
        targets:
          a: {{url: "{stack_server.url}"}}
        models:
          tiny: {{from: ./tiny.gguf}}
        webui:
          public_url: "{ui.url}"
          admin_email: admin@example.org
          admin_password_env: UI_PASSWORD
          admin_key_env: UI_KEY
          secret_key_file: {key_file}
          presets:
            - {{id: helper, model: tiny, name: Helper, system: Be brief.}}
        """))
    monkeypatch.setenv("UI_PASSWORD", "a-long-admin-password")
    monkeypatch.setenv("CORRAL_LOCK_DIR", str(tmp_path))
    monkeypatch.delenv("UI_KEY", raising=False)
    return path


def test_an_unset_key_is_a_warning_and_the_ui_is_not_asked(stack, ui, capsys):
    assert main(["plan", "-f", str(stack)]) == 0
    captured = capsys.readouterr()
    assert "Warning: Open WebUI presets not compared: environment variable UI_KEY is not set." in captured.err
    assert "Open WebUI presets at" not in captured.out
    assert ui.calls == []


def test_plan_lists_preset_changes_and_apply_syncs_the_rendered_presets(stack, ui, monkeypatch, capsys):
    monkeypatch.setenv("UI_KEY", KEY)
    assert main(["render", "-f", str(stack)]) == 0
    capsys.readouterr()
    assert main(["plan", "-f", str(stack)]) == 0
    assert f"Open WebUI presets at {ui.url}:\n  + helper\n  - stray\nPresets: 1 to create, 0 to update, 1 to delete.\n" in (
        capsys.readouterr().out
    )
    assert main(["plan", "-f", str(stack), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["webui_presets"]["changes"] == [
        {"action": "create", "id": "helper", "fields": []},
        {"action": "delete", "id": "stray", "fields": []},
    ]
    # A saved plan performs the models only; --target is a subset of the servers: neither syncs.
    assert main(["plan", "-f", str(stack), "--out", str(stack.parent / "plan.json")]) == 0
    assert main(["apply", str(stack.parent / "plan.json")]) == 0
    assert main(["plan", "-f", str(stack), "--target", "a", "--detailed-exitcode"]) == 0  # models applied
    assert ui.synced == []
    capsys.readouterr()

    assert main(["apply", "-f", str(stack), "--auto-approve"]) == 0
    out = capsys.readouterr().out
    assert "Open WebUI presets synced: 2 change(s)." in out
    rendered = json.loads((stack.parent / "rendered" / "open-webui" / "models.json").read_text())
    assert ui.synced == [rendered]  # the body `stack render` wrote, sent once
    assert main(["plan", "-f", str(stack), "--detailed-exitcode"]) == 0
    assert f"Open WebUI presets at {ui.url}: up to date." in capsys.readouterr().out
    # A preset edited in the UI is a change the plan counts and apply puts back.
    ui.records[0]["name"] = "Renamed in the UI"
    assert main(["plan", "-f", str(stack), "--detailed-exitcode"]) == 2
    assert "  ~ helper (name)\n" in capsys.readouterr().out


def test_a_refused_key_is_an_error_before_anything_changes(stack, ui, stack_server, monkeypatch, capsys):
    monkeypatch.setenv("UI_KEY", "sk-not-an-admin-key-0000000000000000")
    assert main(["apply", "-f", str(stack), "--auto-approve"]) == 1
    err = capsys.readouterr().err
    assert f"Error: Open WebUI at {ui.url} refused the admin key in UI_KEY (401: Your session has expired" in err
    assert ui.synced == []
    assert httpx.get(stack_server.url + "/api/tags").json()["models"] == []  # the models were not applied either
