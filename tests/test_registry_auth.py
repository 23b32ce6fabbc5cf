"""Registry credentials (environment or file, never shown) and the 401 challenge flow."""

from __future__ import annotations

import json
import logging

import pytest

from server.registry import credentials as creds
from tests.support.faultproxy import FaultProxy, Respond
from tests.support.models import put_model, store_files
from tests.support.registry_server import ThreadServer
from tests.test_registry_protocol import call


def test_lookup_from_env_and_file(tmp_path):
    env = {"CORRAL_REGISTRY_AUTH": json.dumps({"Reg.Example:5000": {"token": "t0ps3cret"}})}
    c = creds.lookup("reg.example:5000", env)
    assert c is not None and c.authorization() == "Bearer t0ps3cret"
    assert creds.lookup("other.example", env) is None
    assert "t0ps3cret" not in repr(c) and "t0ps3cret" not in str(c)

    f = tmp_path / "auth.json"
    f.write_text(json.dumps({"h": {"username": "u", "password": "pw"}}))
    c = creds.lookup("h", {"CORRAL_REGISTRY_AUTH_FILE": str(f)})
    assert c is not None and c.authorization() == "Basic dTpwdw=="
    assert "pw" not in repr(c)
    assert creds.lookup("h", {"CORRAL_REGISTRY_AUTH_FILE": str(tmp_path / "absent.json")}) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "CORRAL_REGISTRY_AUTH is not valid JSON"),
        ("[]", "CORRAL_REGISTRY_AUTH must be a JSON object keyed by registry host"),
        ('{"h": {"password": "s3cret"}}', "CORRAL_REGISTRY_AUTH: the entry for 'h' needs a token or a username"),
        ('{"h": {"token": 5}}', "CORRAL_REGISTRY_AUTH: the entry for 'h' must be an object of strings"),
    ],
)
def test_bad_credentials_name_the_problem_without_the_secret(text, message):
    with pytest.raises(creds.CredentialsError) as err:
        creds.lookup("h", {"CORRAL_REGISTRY_AUTH": text})
    assert str(err.value) == message
    assert "s3cret" not in str(err.value)


@pytest.fixture
def registry(tmp_path):
    models = tmp_path / "b"
    put_model(models, "registry.ollama.ai/team/bot/v2", b"weights" * 1000)
    with ThreadServer(models) as b:
        yield b


def test_token_flow_sends_credentials_only_to_the_registry_host(registry, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with FaultProxy(registry.port) as proxy, ThreadServer(tmp_path / "c") as c:
        monkeypatch.setenv("CORRAL_REGISTRY_AUTH", json.dumps({proxy.host: {"username": "bot", "password": "pw-secret"}}))
        realm = f"http://{proxy.host}/token"
        proxy.add(
            lambda s: s.path.startswith("/token"),
            Respond(200, b'{"token":"tok-123"}', {"Content-Type": "application/json"}),
            times=99,
        )
        proxy.add(
            lambda s: s.path.startswith("/v2/") and s.headers.get("authorization") != "Bearer tok-123",
            Respond(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="corral",scope="repository:team/bot:pull"'}),
            times=99,
        )
        _, lines = call(c, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True})
        assert lines[-1] == {"status": "success"}
        token_requests = proxy.requests(contains="/token")
        assert token_requests and token_requests[0].headers["authorization"] == "Basic Ym90OnB3LXNlY3JldA=="
        assert "service=corral" in token_requests[0].path
        blob_gets = proxy.requests("GET", "/blobs/")
        assert blob_gets and all(g.headers.get("authorization") == "Bearer tok-123" for g in blob_gets)
    assert "pw-secret" not in caplog.text and "tok-123" not in caplog.text


def test_a_token_realm_on_another_host_is_refused(registry, tmp_path, monkeypatch):
    with FaultProxy(registry.port) as proxy, ThreadServer(tmp_path / "c") as c:
        monkeypatch.setenv("CORRAL_REGISTRY_AUTH", json.dumps({proxy.host: {"token": "tok"}}))
        proxy.add(
            lambda s: True,
            Respond(401, b"", {"WWW-Authenticate": 'Bearer realm="http://attacker.example/token",service="x"'}),
            times=99,
        )
        status, lines = call(c, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True, "stream": False})
        assert (status, lines) == (401, [{
            "error": f"pull model manifest: realm host 'attacker.example' does not match original host '{proxy.host}'"
        }])
        assert len(proxy.seen) == 1  # nothing was sent anywhere else
        assert store_files(c.models) == {} or not [f for f in store_files(c.models) if f.startswith("manifests/")]


def test_still_unauthorised_after_the_challenge(registry, tmp_path):
    with FaultProxy(registry.port) as proxy, ThreadServer(tmp_path / "c") as c:
        proxy.add(lambda s: True, Respond(401, b"", {"WWW-Authenticate": 'Basic realm="x"'}), times=99)
        status, lines = call(c, "/api/pull", {"model": f"{proxy.host}/team/bot:v2", "insecure": True, "stream": False})
        assert (status, lines) == (401, [{"error": "pull model manifest: unauthorized: access denied"}])
