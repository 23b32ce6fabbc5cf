"""`server.auth`'s pure parts: the route → scope table, the Host allow-list, loopback binds, and
the start-up refusal of `server.serve.check_exposure`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from server.auth import host_allowed, host_name, is_loopback_bind, required_scope
from server.config import Config
from server.serve import check_exposure
from toolchain.errors import CorralError

ROUTE_CASES = [
    ("GET", "/", "public"),
    ("HEAD", "/", "public"),
    ("OPTIONS", "/api/create", "public"),  # CORS preflight: no credentials, decided by the CORS layer
    ("POST", "/", "admin"),
    ("POST", "/api/generate", "user"),
    ("POST", "/api/chat", "user"),
    ("POST", "/api/embed", "user"),
    ("POST", "/api/embeddings", "user"),
    ("POST", "/api/show", "user"),
    ("GET", "/api/tags", "user"),
    ("HEAD", "/api/tags", "user"),
    ("GET", "/api/ps", "user"),
    ("GET", "/api/version", "user"),
    ("GET", "/metrics", "user"),
    ("GET", "/api/corral/store", "user"),  # free disk space, for stack doctor
    ("DELETE", "/api/corral/store", "admin"),
    ("POST", "/v1/chat/completions", "user"),
    ("POST", "/v1/completions", "user"),
    ("POST", "/v1/embeddings", "user"),
    ("GET", "/v1/models", "user"),
    ("GET", "/v1/models/llama3:8b", "user"),
    ("DELETE", "/v1/models/x", "admin"),
    ("GET", "/v2/", "user"),
    ("GET", "/v2", "user"),
    ("GET", "/v2/library/x/manifests/latest", "user"),
    ("HEAD", "/v2/library/x/blobs/sha256:" + "0" * 64, "user"),
    ("PUT", "/v2/library/x/manifests/latest", "admin"),
    ("POST", "/v2/library/x/blobs/uploads/", "admin"),
    ("PATCH", "/v2/library/x/blobs/uploads/abc", "admin"),
    ("DELETE", "/v2/library/x/blobs/uploads/abc", "admin"),
    ("GET", "/v2/library/x/blobs/uploads/abc", "admin"),  # an upload session's state belongs to a push
    ("GET", "/v2/library/x/blobs/sha256:" + "0" * 64, "user"),
    ("POST", "/api/create", "admin"),
    ("POST", "/api/blobs/sha256:" + "0" * 64, "admin"),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64, "admin"),
    ("POST", "/api/copy", "admin"),
    ("DELETE", "/api/delete", "admin"),
    ("POST", "/api/pull", "admin"),
    ("POST", "/api/push", "admin"),
    ("POST", "/api/corral/lock", "admin"),  # stack apply's lock
    ("GET", "/api/corral/lock", "admin"),
    ("DELETE", "/api/corral/lock/abc", "admin"),
    ("POST", "/api/lock", "admin"),  # anything unlisted (a future apply lock) is closed by default
    ("GET", "/api/tags/../create", "admin"),  # the table matches whole paths only
    ("GET", "/api/tagsx", "admin"),
    ("POST", "/api/generate/", "admin"),
    ("GET", "/debug/pprof", "admin"),
]


@pytest.mark.parametrize("method, path, scope", ROUTE_CASES)
def test_route_scopes(method, path, scope):
    assert required_scope(method, path) == scope


HOST_CASES = [
    (None, True),
    ("", True),
    ("localhost", True),
    ("LOCALHOST:11434", True),
    ("localhost.", True),
    ("app.localhost:8080", True),
    ("127.0.0.1", True),
    ("127.0.0.1:11434", True),
    ("127.1.2.3", True),
    ("[::1]", True),
    ("[::1]:11434", True),
    ("evil.example", False),
    ("evil.example:11434", False),
    ("localhost.evil.example", False),
    ("evil-localhost.example", False),
    ("10.0.0.1", False),
    ("0.0.0.0", False),
    ("[::ffff:10.0.0.1]:1", False),
    ("team-box", False),  # a dotless name a search domain or LLMNR could resolve to an attacker's page
    ("corral_servers", False),  # a hand-written nginx's upstream name: list it in CORRAL_ALLOWED_HOSTS
    ("testserver", False),
    ("2130706433", False),
    ("team.example", False),
    ("127.0.0.1.evil.example", False),
]


@pytest.mark.parametrize("header, allowed", HOST_CASES)
def test_host_allow_list(header, allowed):
    assert host_allowed(header) is allowed


def test_the_machines_hostname_is_allowed_as_in_ollama():
    from server.auth import AuthMiddleware, install
    from server.config import Config

    class App:
        def __init__(self):
            self.state = type("State", (), {})()
            self.added = None

        def add_middleware(self, cls, **kw):
            self.added = (cls, kw)

    app = App()
    install(app, Config.from_env({}, keys_file=Path("/nonexistent/keys.json"), allowed_hosts=("team.example",)))
    cls, kw = app.added
    assert cls is AuthMiddleware and kw["loopback"] is True
    assert kw["allowed_hosts"] == ("team.example", socket.gethostname())
    assert host_allowed(f"{socket.gethostname()}:11434", kw["allowed_hosts"])
    assert not host_allowed("another-box:11434", kw["allowed_hosts"])


@pytest.mark.parametrize("loopback, allow_unauthenticated, status", [
    (True, False, 200),  # a laptop: open, as Ollama
    (False, True, 200),  # a proxy in front authenticates
    (False, False, 401),  # a public bind whose last key was revoked never falls open
])
def test_no_keys_is_open_only_on_loopback_or_when_told(tmp_path, loopback, allow_unauthenticated, status):
    import asyncio

    from server.auth import AuthMiddleware, KeyRing

    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    middleware = AuthMiddleware(app, keyring=KeyRing(tmp_path / "keys.json"), loopback=loopback,
                                allow_unauthenticated=allow_unauthenticated)
    scope = {"type": "http", "method": "GET", "path": "/api/tags", "headers": [(b"host", b"localhost")]}
    asyncio.run(middleware(scope, None, send))
    assert sent[0]["status"] == status


def test_extra_allowed_hosts():
    assert host_allowed("team.example:11434", ["team.example"]) and host_allowed("TEAM.EXAMPLE", [" team.example "])
    assert not host_allowed("team.example.evil", ["team.example"])
    assert host_name("[::1]:80") == "::1" and host_name("Example.COM.:1") == "example.com"


@pytest.mark.parametrize(
    "bind, loopback",
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False), ("", False)],
)
def test_loopback_binds(bind, loopback):
    assert is_loopback_bind(bind) is loopback


def test_exposure_refused_without_keys_on_a_public_bind(tmp_path):
    config = Config.from_env({"CORRAL_KEYS_FILE": str(tmp_path / "k.json")})
    with pytest.raises(CorralError, match=r"refusing to listen on 0\.0\.0\.0 without API keys.*stack keys add NAME"):
        check_exposure(config, "0.0.0.0", 0)
    check_exposure(config, "0.0.0.0", 1)  # keys: fine
    check_exposure(config, "127.0.0.1", 0)  # loopback: open, as Ollama
    check_exposure(Config.from_env({"CORRAL_ALLOW_UNAUTHENTICATED": "1"}), "0.0.0.0", 0)


def test_security_settings_from_env(tmp_path):
    c = Config.from_env({
        "CORRAL_KEYS_FILE": str(tmp_path / "k.json"), "CORRAL_ALLOWED_HOSTS": " a.example, b ,",
        "CORRAL_MAX_BODY_BYTES": "100", "CORRAL_MAX_BLOB_BYTES": "-1", "CORRAL_MAX_CONNECTIONS": "x",
    })
    assert c.keys_file == tmp_path / "k.json" and c.allowed_hosts == ("a.example", "b")
    assert (c.max_body_bytes, c.max_blob_bytes, c.max_connections, c.idle_timeout) == (100, 0, 1024, 5)
    assert c.allow_unauthenticated is False
