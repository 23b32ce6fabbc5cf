"""The real Open WebUI (0.12.4, its own venv) run with the rendered env file, behind the rendered nginx.

One stack file drives everything, as on a team server: `stack apply` creates its models on a
real `stack serve`, `stack render` writes nginx's and Open WebUI's files, the real nginx and
`open-webui serve` start on them (loopback, free ports). Then, as a user would: sign in as the
rendered headless admin through nginx (the UI's own host name), list the models (the stack's,
fetched by Open WebUI through the proxy with its bearer token), chat, and reconcile the
presets with the rendered `models.json` (`POST /api/v1/models/sync`).

Marked `webui` (Open WebUI takes about a minute to boot); skipped when scripts/install-webui
has not been run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.support.nginx import NGINX, Nginx, free_port
from tests.support.server import start_server
from tests.support.webui import INSTALL_HINT, WEBUI_BIN, OpenWebUI, read_env_file
from toolchain.cli import main

pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(WEBUI_BIN is None, reason=INSTALL_HINT),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
    pytest.mark.timeout(900),
]

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "a-long-admin-password"
ENV = {
    "OPS_TOKEN": "ops.0123456789+abcdef/XYZ=",
    "WEBUI_TOKEN": "webui_0123456789abcdef",
    "WEBUI_ADMIN_PASSWORD": ADMIN_PASSWORD,
}


def _stack(replica: str, proxy_port: int, webui_port: int, key_file: Path, helper: str = "Helper") -> str:
    return textwrap.dedent(
        f"""\
        version: 1
        targets:
          r1: {{url: "http://{replica}"}}
        models:
          tiny: {{from: ./tiny.gguf}}
        proxy:
          listen: "127.0.0.1:{proxy_port}"
          clients:
            - {{name: ops, scope: admin, token_env: OPS_TOKEN}}
            - {{name: webui, scope: user, token_env: WEBUI_TOKEN}}
        webui:
          public_url: "http://localhost:{proxy_port}"
          listen: "127.0.0.1:{webui_port}"
          client: webui
          admin_email: {ADMIN_EMAIL}
          admin_password_env: WEBUI_ADMIN_PASSWORD
          admin_key_env: WEBUI_ADMIN_KEY
          secret_key_file: {key_file}
          default_models: [helper]
          presets:
            - id: helper
              model: tiny
              name: {helper}
              description: Answers briefly
              system: You answer in one short sentence.
              params: {{temperature: 0.1, num_predict: 8}}
              tags: [team]
        """
    )


class Team:
    """The running team server: replica, nginx (API + UI host), Open WebUI; where its files are."""

    def __init__(self, root: Path, server, nginx: Nginx, webui: OpenWebUI, stack_args: tuple) -> None:  # noqa: ANN001
        self.root = root
        self.server = server
        self.stack = root / "stack.yaml"
        self.stack_args = stack_args
        self.rendered = root / "rendered"
        self.nginx = nginx
        self.webui = webui

    def ui(self) -> httpx.Client:
        """A client of Open WebUI through nginx, under its public host name."""
        return httpx.Client(base_url=self.nginx.url, headers={"Host": f"localhost:{self.nginx.port}"}, timeout=300)

    def signin(self, client: httpx.Client) -> dict:
        r = client.post("/api/v1/auths/signin", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def team(tmp_path_factory, tiny_gguf):
    root = tmp_path_factory.mktemp("team")
    mp = pytest.MonkeyPatch()
    for key, value in ENV.items():
        mp.setenv(key, value)
    mp.delenv("WEBUI_ADMIN_KEY", raising=False)  # no UI yet, so no key: the first apply only warns
    server = start_server(root / "models")
    nginx = webui = None
    try:
        shutil.copy(tiny_gguf, root / "tiny.gguf")
        key_file = root / "webui-secret-key"
        key_file.write_text("0123456789abcdef0123456789abcdef\n")
        proxy_port, webui_port = free_port(), free_port()
        stack = root / "stack.yaml"
        stack_args = (server.host_env, proxy_port, webui_port, key_file)
        stack.write_text(_stack(*stack_args))
        assert main(["apply", "-f", str(stack), "--auto-approve"]) == 0
        assert main(["render", "-f", str(stack)]) == 0
        nginx = Nginx(root / "rendered" / "nginx", proxy_port).start()
        ui_dir = root / "rendered" / "open-webui"
        env = {**read_env_file(ui_dir / "open-webui.env"), **read_env_file(ui_dir / "secrets.env")}
        webui = OpenWebUI(env, root / "webui-data", webui_port).start()
        yield Team(root, server, nginx, webui, stack_args)
    finally:
        if webui is not None:
            webui.stop()
        if nginx is not None:
            nginx.stop()
        server.stop()
        mp.undo()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_rendered_admin_signs_in_through_nginx_and_signup_is_off(team):
    with team.ui() as ui:
        me = team.signin(ui)
        assert me["role"] == "admin" and me["email"] == ADMIN_EMAIL
        r = ui.post("/api/v1/auths/signin", json={"email": ADMIN_EMAIL, "password": "wrong-password"})
        assert r.status_code in (400, 401, 403)
        r = ui.post("/api/v1/auths/signup", json={"name": "eve", "email": "eve@example.org", "password": "x" * 12})
        assert r.status_code in (400, 401, 403)
        config = ui.get("/api/config", headers=_auth(me["token"])).json()
        assert config["features"]["enable_signup"] is False


def test_open_webui_lists_the_stack_models_fetched_through_the_proxy(team):
    with team.ui() as ui:
        token = team.signin(ui)["token"]
        r = ui.get("/api/models", headers=_auth(token))
        assert r.status_code == 200, r.text
        ids = {m["id"] for m in r.json()["data"]}
        assert "tiny:latest" in ids
    # Open WebUI asked the model server through nginx, as the `webui` client (its bearer token).
    tags = team.nginx.wait_access_log(r"client=webui .*/api/tags.*")
    assert tags, team.nginx.access_log()


def test_a_chat_answer_comes_back_through_nginx(team):
    with team.ui() as ui:
        token = team.signin(ui)["token"]
        body = {
            "model": "tiny:latest",
            "messages": [{"role": "user", "content": "Say hello."}],
            "stream": False,
            "params": {"num_predict": 8},
        }
        r = ui.post("/api/chat/completions", json=body, headers=_auth(token))
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert isinstance(answer["choices"][0]["message"]["content"], str)
    chats = team.nginx.wait_access_log(r"client=webui .*POST /api/chat .*")
    assert chats and '" 200 ' in chats[-1], team.nginx.access_log()


def test_the_rendered_models_json_is_what_open_webuis_sync_accepts(team):
    body = json.loads((team.rendered / "open-webui" / "models.json").read_text())
    with team.ui() as ui:
        token = team.signin(ui)["token"]
        r = ui.post("/api/v1/models/sync", json=body, headers=_auth(token))
        assert r.status_code == 200, r.text
        synced = {m["id"]: m for m in r.json()}
        assert set(synced) == {"helper"}
        helper = synced["helper"]
        assert helper["base_model_id"] == "tiny:latest"
        assert helper["name"] == "Helper"
        assert helper["params"]["system"] == "You answer in one short sentence."
        listed = {m["id"]: m for m in ui.get("/api/models", headers=_auth(token)).json()["data"]}
        assert listed["helper"]["name"] == "Helper"
        r = ui.post(
            "/api/chat/completions",
            json={"model": "helper", "messages": [{"role": "user", "content": "Hi"}], "stream": False},
            headers=_auth(token),
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["role"] == "assistant"


def test_stack_plan_and_apply_reconcile_the_presets_with_an_admin_api_key(team, monkeypatch, capsys):
    with team.ui() as ui:
        session = _auth(team.signin(ui)["token"])
        r = ui.post("/api/v1/auths/api_key", headers=session)
        assert r.status_code == 200, r.text
        key = r.json()["api_key"]
        # The rendered env limits API keys to the model routes: the key cannot read users.
        assert ui.get("/api/v1/users/", headers=_auth(key)).status_code == 403
        stray = {"id": "stray", "name": "Made by hand", "meta": {}, "params": {}, "base_model_id": "tiny:latest"}
        assert ui.post("/api/v1/models/create", json=stray, headers=session).status_code == 200
    monkeypatch.setenv("WEBUI_ADMIN_KEY", key)
    team.stack.write_text(_stack(*team.stack_args, helper="Helper v2"))
    # As an operator does: render the changed stack (models.json), so the plan's changes are the UI's.
    assert main(["render", "-f", str(team.stack)]) == 0
    capsys.readouterr()

    assert main(["plan", "-f", str(team.stack), "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert f"Open WebUI presets at http://localhost:{team.nginx.port}:" in out
    assert "  ~ helper (name)\n" in out and "  - stray\n" in out
    assert main(["plan", "-f", str(team.stack), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["changed"] is True and doc["webui_presets"]["url"] == f"http://localhost:{team.nginx.port}"
    assert doc["webui_presets"]["changes"] == [
        {"action": "update", "id": "helper", "fields": ["name"]},
        {"action": "delete", "id": "stray", "fields": []},
    ]
    assert main(["plan", "-f", str(team.stack), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| `~` | `helper` | update | name |\n" in out and "| `-` | `stray` | delete |  |\n" in out

    assert main(["apply", "-f", str(team.stack), "--auto-approve"]) == 0
    out = capsys.readouterr().out
    assert "Open WebUI presets synced: 2 change(s)." in out
    with team.ui() as ui:
        records = {m["id"]: m for m in ui.get("/api/v1/models/all", headers=_auth(key)).json()}
    assert set(records) == {"helper"} and records["helper"]["name"] == "Helper v2"

    assert main(["plan", "-f", str(team.stack), "--detailed-exitcode"]) == 0
    assert "up to date" in capsys.readouterr().out
    monkeypatch.setenv("WEBUI_ADMIN_KEY", "sk-0000000000000000000000000000dead")
    assert main(["apply", "-f", str(team.stack), "--auto-approve"]) == 1
    assert "refused the admin key in WEBUI_ADMIN_KEY (401" in capsys.readouterr().err


@pytest.mark.e2e
def test_gemma_answers_a_question_asked_in_open_webui(team, gemma_gguf):
    """A real model: the answer Open WebUI returns is Gemma's, generated behind nginx."""
    data = gemma_gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=team.server.url, timeout=300) as direct:
        assert direct.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
        r = direct.post("/api/create", json={"model": "gemma3:270m", "files": {"gemma.gguf": digest}, "stream": False})
        assert r.status_code == 200, r.text
    with team.ui() as ui:
        token = team.signin(ui)["token"]
        ids = {m["id"] for m in ui.get("/api/models", headers=_auth(token)).json()["data"]}
        assert "gemma3:270m" in ids
        body = {
            "model": "gemma3:270m",
            "messages": [{"role": "user", "content": "What is the capital of France? Answer with one word."}],
            "stream": False,
            "params": {"temperature": 0, "num_predict": 16},
        }
        r = ui.post("/api/chat/completions", json=body, headers=_auth(token))
        assert r.status_code == 200, r.text
        assert "paris" in r.json()["choices"][0]["message"]["content"].lower()
