"""API keys, scopes, the Host check, body limits, /metrics and the access log on a real `stack serve`,
through httpx, the official `ollama` client and the `openai` SDK."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import ollama
import openai
import pytest

from tests.adversarial.conftest import tree
from tests.support.server import REPO_ROOT, ServerProcess, free_port, start_server
from toolchain import keys as kf

DIGEST0 = "sha256:" + "0" * 64
UNAUTHORIZED = {"error": "unauthorized"}


def forbidden(name: str) -> dict:
    return {"error": f"forbidden: this route needs an admin key; key '{name}' has scope user"}


class Keyed:
    def __init__(self, server: ServerProcess, keys_file: Path, admin: str, user: str) -> None:
        self.server, self.keys_file, self.admin, self.user = server, keys_file, admin, user
        self.url = server.url

    def get(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        return self.request("GET", path, token, **kw)

    def request(self, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[Keyed]:
    base = tmp_path_factory.mktemp("keyed")
    keys_file = base / "keys.json"
    admin = kf.add(keys_file, "root-admin", "admin")
    user = kf.add(keys_file, "alice", "user")
    with start_server(base / "models", env={"CORRAL_KEYS_FILE": str(keys_file)}) as srv:
        yield Keyed(srv, keys_file, admin, user)


# -- keys and scopes ---------------------------------------------------------------------------------


def test_root_is_public_everything_else_needs_a_key(keyed):
    assert keyed.get("/").text == "Ollama is running"
    assert keyed.request("HEAD", "/").status_code == 200
    for method, path in [("GET", "/api/tags"), ("GET", "/api/version"), ("GET", "/api/ps"), ("GET", "/metrics"),
                         ("POST", "/api/show"), ("POST", "/api/generate"), ("POST", "/api/create"),
                         ("DELETE", "/api/delete"), ("GET", "/api/nope")]:
        r = keyed.request(method, path)
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), (method, path)
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer corral_wrong", "Bearer", "Basic YWxpY2U6eA==", "bearer  x", "Token {user}", "{user}", "Bearer {user}x"],
)
def test_unknown_or_malformed_credentials(keyed, header):
    r = keyed.get("/api/tags", headers={"Authorization": header.format(user=keyed.user)})
    assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (401, UNAUTHORIZED, "Bearer")


def test_user_key_reads_and_scheme_is_case_insensitive(keyed):
    assert keyed.get("/api/tags", keyed.user).json() == {"models": []}
    r = keyed.get("/api/version", headers={"Authorization": f"bearer {keyed.user}"})
    assert r.status_code == 200 and "version" in r.json()
    r = keyed.request("POST", "/api/show", keyed.user, json={"model": "nope"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'nope:latest' not found"})  # past auth, into the route


MANAGEMENT = [
    ("POST", "/api/create", {"model": "x", "files": {}}),
    ("POST", f"/api/blobs/{DIGEST0}", None),
    ("HEAD", f"/api/blobs/{DIGEST0}", None),
    ("POST", "/api/copy", {"source": "a", "destination": "b"}),
    ("DELETE", "/api/delete", {"model": "a"}),
    ("POST", "/api/pull", {"model": "a"}),
    ("POST", "/api/push", {"model": "a"}),
]


@pytest.mark.parametrize("method, path, body", MANAGEMENT)
def test_management_refuses_a_user_key(keyed, method, path, body):
    r = keyed.request(method, path, keyed.user, json=body)
    assert r.status_code == 403
    if method != "HEAD":
        assert r.json() == forbidden("alice")
    r = keyed.request(method, path, None, json=body)
    assert r.status_code == 401


def _app_routes(routes, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route of a FastAPI app, included routers too."""
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers whole
            yield from _app_routes(route.original_router.routes, prefix + route.include_context.prefix)
        for method in sorted(getattr(route, "methods", None) or ()):
            yield method, prefix + route.path


#: Every route a `user` key may call, as issue #10 lists them (inference and reads); all else is admin.
USER_ROUTES = {
    ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
    ("POST", "/api/show"), ("GET", "/api/tags"), ("HEAD", "/api/tags"), ("GET", "/api/ps"),
    ("GET", "/api/version"), ("HEAD", "/api/version"), ("GET", "/metrics"), ("HEAD", "/metrics"),
    ("GET", "/api/corral/store"), ("HEAD", "/api/corral/store"),
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{model:path}"),
    ("GET", "/v2/"), ("GET", "/v2"), ("GET", "/v2/{namespace}/{model}/manifests/{reference}"),
    ("HEAD", "/v2/{namespace}/{model}/manifests/{reference}"), ("GET", "/v2/{namespace}/{model}/blobs/{digest}"),
    ("HEAD", "/v2/{namespace}/{model}/blobs/{digest}"),
}


def test_every_management_route_of_the_app_refuses_a_user_key(keyed, tmp_path):
    """Walk the app's own route table (not a list kept by hand): the routes a user key may call are
    exactly the inference and read routes; every other one answers 403 to a user key and 401 without."""
    from server.app import create_app
    from server.auth import required_scope
    from server.config import Config

    app = create_app(Config.from_env({}, models=tmp_path / "m", keys_file=tmp_path / "none.json"))
    routes = set(_app_routes(app.routes))
    scopes = {(m, p): required_scope(m, re.sub(r"\{digest\}", DIGEST0, re.sub(r"\{(?!digest)[^}]+\}", "x", p)))
              for m, p in routes}
    assert {r for r, scope in scopes.items() if scope == "user"} == USER_ROUTES
    assert {r for r, scope in scopes.items() if scope == "public"} == {("GET", "/"), ("HEAD", "/")}
    admin = sorted(r for r, scope in scopes.items() if scope == "admin")
    assert admin == sorted([  # the management routes of the issue: create, blobs, copy, delete, pull, push,
        ("POST", "/api/create"), ("HEAD", "/api/blobs/{digest}"), ("POST", "/api/blobs/{digest}"),  # registry
        ("POST", "/api/copy"), ("DELETE", "/api/delete"), ("POST", "/api/pull"), ("POST", "/api/push"),  # writes,
        ("POST", "/v2/{namespace}/{model}/blobs/uploads/"),  # the apply lock
        *((m, "/v2/{namespace}/{model}/blobs/uploads/{session}") for m in ("GET", "PATCH", "PUT", "DELETE")),
        ("PUT", "/v2/{namespace}/{model}/manifests/{reference}"),
        ("GET", "/api/corral/lock"), ("POST", "/api/corral/lock"),
        ("PUT", "/api/corral/lock/{lease_id}"), ("DELETE", "/api/corral/lock/{lease_id}"),
    ])
    base = keyed.keys_file.parent  # the keys file and the store: refusals change nothing in either
    before = tree(base, base / "nothing")
    for method, template in admin:
        path = re.sub(r"\{digest\}", DIGEST0, re.sub(r"\{(?!digest)[^}]+\}", "x", template))
        r = keyed.request(method, path, keyed.user, json={} if method in ("POST", "PUT", "PATCH", "DELETE") else None)
        assert r.status_code == 403, (method, template, r.status_code)
        if method != "HEAD" and not path.startswith("/v2"):
            assert r.json() == forbidden("alice"), (method, template)
        r = keyed.request(method, path, None)
        assert r.status_code == 401, (method, template, r.status_code)
        assert tree(base, base / "nothing") == before, (method, template)
        started = time.monotonic()
        assert keyed.get("/").text == "Ollama is running" and time.monotonic() - started < 1.0


def test_registry_writes_refuse_a_user_key_in_oci_shape(keyed):
    r = keyed.request("POST", "/v2/library/x/blobs/uploads/", keyed.user)
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "DENIED"
    r = keyed.request("GET", "/v2/", None)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert keyed.request("GET", "/v2/library/x/manifests/latest", keyed.user).status_code != 401


def test_admin_key_manages_models_through_the_ollama_client(keyed, tiny_gguf):
    admin = ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {keyed.admin}"})
    user = ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {keyed.user}"})
    anonymous = ollama.Client(host=keyed.url)

    with pytest.raises(ollama.ResponseError) as info:
        anonymous.list()
    assert info.value.status_code == 401 and info.value.error == "unauthorized"
    with pytest.raises(ollama.ResponseError) as info:
        user.create_blob(tiny_gguf)
    assert info.value.status_code == 403

    digest = admin.create_blob(tiny_gguf)
    admin.create(model="keyed-tiny", files={"tiny.gguf": digest})
    assert [m.model for m in user.list().models] == ["keyed-tiny:latest"]
    assert user.show("keyed-tiny").details.family == "llama"
    with pytest.raises(ollama.ResponseError) as info:
        user.copy("keyed-tiny", "stolen")
    assert info.value.status_code == 403
    with pytest.raises(ollama.ResponseError) as info:
        user.delete("keyed-tiny")
    assert info.value.status_code == 403
    admin.copy("keyed-tiny", "keyed-copy")
    admin.delete("keyed-copy")
    admin.delete("keyed-tiny")
    assert user.list().models == []


def test_openai_sdk_needs_a_key(keyed):
    for key in ("missing", "corral_wrong"):
        client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            client.models.list()
        assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
        assert info.value.body["type"] == "invalid_request_error"
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=keyed.user, max_retries=0)
    assert isinstance(client.models.list().data, list)  # a user key is let through to /v1/models


def test_stack_cli_sends_corral_token(keyed):
    env = {**os.environ, "OLLAMA_HOST": keyed.server.host_env}
    env.pop("CORRAL_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "toolchain.cli", "list"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (1, "Error: unauthorized")
    r = subprocess.run([sys.executable, "-m", "toolchain.cli", "list"], cwd=REPO_ROOT,
                       env={**env, "CORRAL_TOKEN": keyed.user}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["NAME", "ID", "SIZE", "MODIFIED"]


def _until(predicate, what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_keys_file_changes_apply_without_restart(keyed):
    token = kf.add(keyed.keys_file, "late", "user")
    _until(lambda: keyed.get("/api/tags", token).status_code == 200, "a new key accepted")
    kf.revoke(keyed.keys_file, "late")
    _until(lambda: keyed.get("/api/tags", token).status_code == 401, "a revoked key refused")
    # a broken file keeps the keys loaded before: it never opens the server
    good = keyed.keys_file.read_bytes()
    keyed.keys_file.write_text("{broken")
    try:
        _until(lambda: keyed.get("/api/tags").status_code == 401 and "keeping the 2 keys loaded before"
               in keyed.server.log(), "the broken file noticed")
        assert keyed.get("/api/tags").status_code == 401
        assert keyed.get("/api/tags", keyed.user).status_code == 200
    finally:
        kf.save(keyed.keys_file, kf.parse(good))


def test_tokens_never_reach_the_log_and_the_log_names_the_client(keyed):
    keyed.get("/api/tags", keyed.user)
    keyed.get("/api/tags", "corral_not-a-key-but-secret")
    # the line is written once the answer is sent: wait for it
    _until(lambda: '"status": 401' in keyed.server.log().rstrip().rsplit("\n", 1)[-1], "the 401 logged")
    log = keyed.server.log()
    assert keyed.user not in log and keyed.admin not in log and "not-a-key-but-secret" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {"client": "alice", "method": "GET", "route": "/api/tags", "status": 200} in [
        {k: line.get(k) for k in ("client", "method", "route", "status")} for line in lines
    ]
    last = lines[-1]
    assert (last["client"], last["status"], last["path"]) == (None, 401, "/api/tags")
    assert set(last) >= {"time", "route", "duration_ms", "first_byte_ms"}


def test_metrics_count_requests(keyed):
    def count() -> float:
        r = keyed.get("/metrics", keyed.user)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        for line in r.text.splitlines():
            if line.startswith('corral_http_requests_total{method="GET",route="/api/tags",status="200"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    for _ in range(3):
        keyed.get("/api/tags", keyed.user)
    _until(lambda: count() == before + 3, "three more requests counted")  # counted after the last byte is sent
    text = keyed.get("/metrics", keyed.user).text
    assert 'corral_auth_denied_total{status="401"}' in text
    assert "corral_http_request_duration_seconds_bucket" in text


# -- exposure and limits ------------------------------------------------------------------------------


def test_host_check_on_loopback(tmp_path):
    with start_server(tmp_path / "models", env={"CORRAL_ALLOWED_HOSTS": "team.example"}) as srv:
        for host in ("localhost", f"localhost:{srv.port}", "127.0.0.1", "[::1]:1", "a.localhost", "team.example:1",
                     f"{socket.gethostname()}:11434"):
            r = httpx.get(srv.url + "/api/tags", headers={"Host": host})
            assert r.status_code == 200, host
        for host in ("evil.example", f"evil.example:{srv.port}", "localhost.evil.example", "10.0.0.1",
                     "corral_servers", "not-this-machine:11434"):
            r = httpx.get(srv.url + "/", headers={"Host": host})
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            assert r.status_code == 403, host
            assert r.json() == {"error": f'forbidden: host "{name}" is not allowed (a loopback server answers only '
                                         "localhost names; add others to CORRAL_ALLOWED_HOSTS)"}
        r = httpx.post(srv.url + "/api/delete", headers={"Host": "evil.example"}, json={"model": "x"})
        assert r.status_code == 403


def test_public_bind_without_keys_refuses_to_start(tmp_path):
    env = {**os.environ, "OLLAMA_HOST": f"0.0.0.0:{free_port()}", "OLLAMA_MODELS": str(tmp_path / "m"),
           "CORRAL_KEYS_FILE": str(tmp_path / "none.json")}
    env.pop("CORRAL_ALLOW_UNAUTHENTICATED", None)
    r = subprocess.run([sys.executable, "-m", "toolchain.cli", "serve"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("Error: refusing to listen on 0.0.0.0 without API keys")
    assert "stack keys add NAME --scope admin" in r.stderr and "CORRAL_ALLOW_UNAUTHENTICATED=1" in r.stderr


def test_malformed_keys_file_refuses_to_start(tmp_path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text('{"keys": [{"name": "a"}]}')
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OLLAMA_MODELS": str(tmp_path / "m"),
           "CORRAL_KEYS_FILE": str(keys_file)}
    r = subprocess.run([sys.executable, "-m", "toolchain.cli", "serve"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f'Error: keys file {keys_file}: key #1: invalid scope null: use one of user, admin'


def test_body_limits(tmp_path):
    env = {"CORRAL_MAX_BODY_BYTES": "1000", "CORRAL_MAX_BLOB_BYTES": "5000"}
    with start_server(tmp_path / "models", env=env) as srv:
        r = httpx.post(srv.url + "/api/show", content=b" " * 1001)
        assert (r.status_code, r.json()) == (413, {"error": "request body larger than 1000 bytes"})

        def chunks(n: int) -> Iterator[bytes]:  # no Content-Length: the limit holds as bytes arrive
            for _ in range(n):
                yield b"x" * 500

        r = httpx.post(srv.url + "/api/show", content=chunks(3))
        assert (r.status_code, r.json()) == (413, {"error": "request body larger than 1000 bytes"})
        data = b"y" * 6000
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = httpx.post(f"{srv.url}/api/blobs/{digest}", content=data)
        assert (r.status_code, r.json()) == (413, {"error": "request body larger than 5000 bytes"})
        r = httpx.post(f"{srv.url}/api/blobs/{digest}", content=chunks(12))
        assert (r.status_code, r.json()) == (413, {"error": "request body larger than 5000 bytes"})
        small = b"z" * 4000  # a blob over the JSON limit but under the blob limit is fine
        r = httpx.post(f"{srv.url}/api/blobs/sha256:{hashlib.sha256(small).hexdigest()}", content=small)
        assert r.status_code == 201
        assert sorted(p.name for p in (srv.models / "blobs").iterdir()) == [
            "sha256-" + hashlib.sha256(small).hexdigest()
        ]  # no partial or temp file left by the refused uploads
        r = httpx.post(srv.url + "/v1/chat/completions", content=b"{" * 2000)
        assert r.status_code == 413 and r.json()["error"]["message"] == "request body larger than 1000 bytes"
        assert httpx.get(srv.url + "/").text == "Ollama is running"


def _metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


def test_generation_with_a_user_key_moves_the_token_metrics_and_is_logged(keyed, tiny_gguf):
    admin = ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {keyed.admin}"})
    user = ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {keyed.user}"})
    admin.create(model="gen", files={"tiny.gguf": admin.create_blob(tiny_gguf)})
    before = keyed.get("/metrics", keyed.user).text
    label = 'model="gen:latest"'

    out = user.generate(model="gen", prompt="hello", raw=True, options={"num_predict": 4, "temperature": 0})
    assert out.done and out.eval_count >= 1
    chunks = list(user.chat(model="gen", messages=[{"role": "user", "content": "hi"}], stream=True,
                            options={"num_predict": 3, "temperature": 0}))
    assert chunks[-1].done
    assert [m.model for m in user.ps().models] == ["gen:latest"]

    after = keyed.get("/metrics", keyed.user).text
    generated = out.eval_count + chunks[-1].eval_count
    assert _metric(after, "corral_generated_tokens_total", label) == _metric(before, "corral_generated_tokens_total", label) + generated
    assert _metric(after, "corral_prompt_tokens_total", label) == (
        _metric(before, "corral_prompt_tokens_total", label) + out.prompt_eval_count + chunks[-1].prompt_eval_count)
    assert _metric(after, "corral_time_to_first_token_seconds_count", label) == 2
    assert _metric(after, "corral_loaded_models") == 1 and _metric(after, "corral_queue_depth") == 0
    assert _metric(after, "corral_model_memory_bytes", label) > 0
    _until(lambda: _metric(keyed.get("/metrics", keyed.user).text, "corral_http_requests_total",
                           'method="POST",route="/api/generate",status="200"') == 1, "the generate request counted")

    _until(lambda: '"route": "/api/generate"' in keyed.server.log(), "the generation logged")
    lines = [json.loads(x) for x in keyed.server.log().splitlines() if x.startswith("{")]
    gen = [x for x in lines if x["route"] == "/api/generate"][-1]
    assert (gen["client"], gen["model"], gen["generated_tokens"], gen["status"]) == ("alice", "gen:latest", out.eval_count, 200)
    assert gen["prompt_tokens"] == out.prompt_eval_count and gen["ttft_ms"] > 0 and gen["load_wait_ms"] >= 0
    assert gen["duration_ms"] >= gen["ttft_ms"]
    admin.delete("gen")
