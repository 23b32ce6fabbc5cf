"""The rendered nginx, run for real (Debian's nginx with -p) in front of real `stack serve` replicas.

The stack file is rendered through `stack render`, nginx is started on the rendered prefix,
and requests go through it with real HTTP clients: auth (401/403), admin create with a blob
upload, body limits, per-client rate limits (429), balancing over both replicas, failover with
a replica stopped, the access log naming clients, never tokens, and the rendered prefix run
by an unprivileged user.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.nginx import NGINX, Nginx, free_port, self_signed
from tests.support.server import start_server
from toolchain.cli import main

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

USER = "user-0123456789abcdef"
ADMIN = "admin.0123456789+abcdef/XYZ="
OTHER = "other-0123456789abcdef"
ENV = {"USER_TOKEN": USER, "ADMIN_TOKEN": ADMIN, "OTHER_TOKEN": OTHER}


def _stack(
    replicas: list[str], port: int, *, rps: int = 1000, burst: int = 1000, user_body: str = "64k", streams: int = 4,
    upstream_env: str | None = None,
) -> str:
    targets = "".join(f"  r{i}: {{url: \"http://{r}\"}}\n" for i, r in enumerate(replicas, start=1))
    return textwrap.dedent(
        """\
        version: 1
        targets:
        {targets}models:
          tiny: {{from: ./tiny.gguf}}
        proxy:
          listen: "127.0.0.1:{port}"
          clients:
            - {{name: alice, scope: user, token_env: USER_TOKEN}}
            - {{name: bob, scope: user, token_env: OTHER_TOKEN}}
            - {{name: ops, scope: admin, token_env: ADMIN_TOKEN}}
          rate_limit: {{requests_per_second: {rps}, burst: {burst}, streams: {streams}}}
          body_limits: {{user: "{user_body}", upload: "0"}}
          max_fails: 1
          fail_timeout: 30
        """
    ).format(targets=targets, port=port, rps=rps, burst=burst, user_body=user_body, streams=streams) + (
        f"  upstream_token_env: {upstream_env}\n" if upstream_env else ""
    )


def _render_and_start(tmp: Path, replicas: list[str], monkeypatch, **kw) -> Nginx:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    stack = tmp / "stack.yaml"
    stack.write_text(_stack(replicas, port, **kw))
    assert main(["render", "-f", str(stack)]) == 0
    return Nginx(tmp / "rendered" / "nginx", port).start()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    servers = [start_server(tmp_path_factory.mktemp(f"models{i}")) for i in (1, 2)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def edge(replicas, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        nginx = _render_and_start(tmp_path_factory.mktemp("edge"), [s.host_env for s in replicas], mp)
        with nginx, httpx.Client(base_url=nginx.url, timeout=30) as client:
            yield nginx, client
    finally:
        mp.undo()


def test_no_token_or_a_wrong_token_gets_401_with_a_json_body(edge):
    _, client = edge
    for headers in ({}, _auth("wrong-0123456789abcdef"), {"Authorization": USER}, _auth(USER.upper())):
        r = client.get("/api/tags", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"error": "unauthorized: a valid bearer token is required"}
        assert r.headers["www-authenticate"] == 'Bearer realm="corral"'
    # The scheme is case-insensitive (RFC 7235), the token is not.
    assert client.get("/api/tags", headers={"Authorization": f"bearer {USER}"}).status_code == 200


def test_user_token_reads_and_infers_but_cannot_manage(edge):
    _, client = edge
    r = client.get("/api/tags", headers=_auth(USER))
    assert r.status_code == 200 and "models" in r.json()
    assert client.get("/", headers=_auth(USER)).text == "Ollama is running"
    r = client.post("/api/show", json={"model": "nope"}, headers=_auth(USER))
    assert r.status_code == 404 and "not found" in r.json()["error"]  # the replica's own answer
    digest = "sha256:" + "0" * 64
    forbidden = [
        ("POST", "/api/create", {"model": "x", "from": "tiny"}),
        ("POST", "/api/copy", {"source": "a", "destination": "b"}),
        ("DELETE", "/api/delete", {"model": "x"}),
        ("POST", "/api/pull", {"model": "x"}),
        ("POST", "/api/push", {"model": "x"}),
        ("HEAD", f"/api/blobs/{digest}", None),
        ("POST", f"/api/blobs/{digest}", None),
        ("PUT", "/v2/library/x/manifests/latest", None),
        ("POST", "/v2/library/x/blobs/uploads/", None),
        ("DELETE", "/v2/library/x/manifests/latest", None),
        ("POST", "/api/corral/lock", {"owner": "u", "ttl": 5}),  # stack apply's lock
        ("GET", "/api/corral/lock", None),
        ("DELETE", "/api/corral/lock/x", None),
        # Deny by default: admin-only routes nginx has no location for, and unknown paths.
        ("GET", "/v2/library/x/blobs/uploads/abc", None),  # an upload session (it belongs to a push)
        ("GET", "/api/nope", None),
        ("POST", "/api/lock", {}),  # a route the server may add later
    ]
    for method, path, body in forbidden:
        r = client.request(method, path, json=body, headers=_auth(USER))
        assert r.status_code == 403, (method, path)
        if method != "HEAD":
            assert r.json() == {"error": "forbidden: this route needs an admin token"}
    # Registry reads pass through to the replica (whatever it answers, it is not the proxy's 403).
    assert client.get("/v2/", headers=_auth(USER)).status_code != 403


def test_admin_uploads_a_blob_larger_than_user_bodies_and_creates(edge, tiny_gguf):
    _, client = edge
    data = tiny_gguf.read_bytes()
    assert len(data) > 64 * 1024  # above the user body limit of this stack
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = client.post(f"/api/blobs/{digest}", content=data, headers=_auth(ADMIN))
    assert r.status_code == 201, r.text
    # A registry upload (a push into a replica) may be as large.
    r = client.post(f"/v2/team/edge-tiny/blobs/uploads/?digest={digest}", content=data, headers=_auth(ADMIN))
    assert r.status_code == 201, r.text
    statuses = []
    with client.stream(
        "POST", "/api/create", json={"model": "edge-tiny", "files": {"tiny.gguf": digest}}, headers=_auth(ADMIN)
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        for line in r.iter_lines():
            if line:
                statuses.append(json.loads(line)["status"])
    assert statuses[-1] == "success"
    # The apply lock passes through for admins (to the replica management calls are hashed onto).
    lease = client.post("/api/corral/lock", json={"owner": "ops", "ttl": 30}, headers=_auth(ADMIN))
    assert lease.status_code == 200, lease.text
    assert client.delete(f"/api/corral/lock/{lease.json()['id']}", headers=_auth(ADMIN)).status_code == 200
    # The same large body on a user route is refused by nginx with a JSON 413.
    r = client.post("/api/chat", content=data, headers={**_auth(USER), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "request body too large"}


def test_inference_and_reads_are_spread_over_both_replicas(edge, replicas):
    """`least_conn` over the stack's replicas: with nothing in flight it takes them in turn."""
    nginx, client = edge
    for _ in range(6):
        assert client.get("/api/version", headers=_auth(OTHER)).status_code == 200
    served = nginx.wait_access_log(r"client=bob .* upstream=(\S+)", 6)
    assert len(served) >= 6 and set(served[-6:]) == {s.host_env for s in replicas}, served


def test_access_log_names_the_client_never_the_token(edge):
    nginx, client = edge
    client.get("/api/version", headers=_auth(ADMIN))
    client.get("/api/version", headers=_auth(USER))
    client.get("/api/version", headers=_auth("wrong-0123456789abcdef"))
    nginx.stop()  # flushes and closes the log
    log = nginx.access_log()
    nginx.start()
    assert "client=ops " in log and "client=alice " in log and "client= " in log
    for token in (USER, ADMIN, "wrong-0123456789abcdef"):
        assert token not in log and token not in nginx.error_log()


def test_a_burst_over_the_limit_gets_429_per_client(replicas, tmp_path, monkeypatch):
    with _render_and_start(tmp_path, [replicas[0].host_env], monkeypatch, rps=1, burst=2) as nginx:
        with httpx.Client(base_url=nginx.url, timeout=30) as client:
            codes = []
            for _ in range(30):  # far more than 1 r/s + a burst of 2 can pass on loopback
                r = client.get("/api/version", headers=_auth(USER))
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert r.json() == {"error": "too many requests: rate limit exceeded, retry later"}
                    break
            assert codes[:3] == [200, 200, 200]
            assert codes[-1] == 429
            # Limits are per client name: another client still gets through.
            assert client.get("/api/version", headers=_auth(OTHER)).status_code == 200


def test_requests_still_succeed_with_one_replica_stopped(tmp_path, monkeypatch):
    first = start_server(tmp_path / "m1")
    second = start_server(tmp_path / "m2")
    try:
        with _render_and_start(tmp_path, [first.host_env, second.host_env], monkeypatch) as nginx:
            with httpx.Client(base_url=nginx.url, timeout=30) as client:
                assert client.get("/api/tags", headers=_auth(USER)).status_code == 200
                second.stop()
                for _ in range(6):
                    assert client.get("/api/tags", headers=_auth(USER)).status_code == 200
                    # A POST that never reached the stopped replica is safely sent to the other one.
                    r = client.post("/api/show", json={"model": "nope"}, headers=_auth(USER))
                    assert r.status_code == 404
                first.stop()
                r = client.get("/api/tags", headers=_auth(USER))
                assert r.status_code == 502
                assert r.json() == {"error": "no model server is reachable"}
    finally:
        first.stop()
        second.stop()


def _create_directly(server, name: str, gguf: Path) -> None:
    """Create a model on one replica directly, as `stack apply` does for each target."""
    data = gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=server.url, timeout=120) as direct:
        assert direct.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
        r = direct.post("/api/create", json={"model": name, "files": {gguf.name: digest}, "stream": False})
        assert r.status_code == 200 and r.json()["status"] == "success", r.text


def _stream_lines(client: httpx.Client, path: str, body: dict, token: str) -> tuple[int, list[tuple[float, dict]]]:
    """POST a streaming request; each NDJSON line with its arrival time (monotonic seconds from the send)."""
    start = time.monotonic()
    lines = []
    with client.stream("POST", path, json=body, headers=_auth(token)) as r:
        for line in r.iter_lines():
            if line:
                lines.append((time.monotonic() - start, json.loads(line)))
        return r.status_code, lines


def test_user_token_gets_200_on_chat_and_generate_streams(edge, replicas, tiny_gguf):
    _, client = edge
    for server in replicas:
        _create_directly(server, "tiny", tiny_gguf)
    status, lines = _stream_lines(
        client, "/api/generate", {"model": "tiny", "prompt": "hello", "raw": True, "options": {"num_predict": 16}}, USER
    )
    assert status == 200
    assert len(lines) >= 2 and lines[-1][1]["done"] is True
    assert all(not body["done"] for _, body in lines[:-1])
    r = client.post("/api/chat", json={"model": "tiny", "messages": [], "stream": False}, headers=_auth(USER))
    assert r.status_code == 200 and r.json()["done"] is True


@pytest.mark.e2e
def test_a_chat_streams_through_nginx_unbuffered(replicas, tmp_path, monkeypatch, gemma_gguf):
    """The first chunk arrives well before the last (a buffering proxy delivers them together)."""
    server = replicas[0]
    _create_directly(server, "gemma3:270m", gemma_gguf)
    with _render_and_start(tmp_path, [server.host_env], monkeypatch) as nginx:
        with httpx.Client(base_url=nginx.url, timeout=300) as client:
            warm = client.post("/api/generate", json={"model": "gemma3:270m"}, headers=_auth(USER))
            assert warm.status_code == 200
            body = {
                "model": "gemma3:270m",
                "messages": [{"role": "user", "content": "Count from 1 to 100, one number per line."}],
                "options": {"temperature": 0, "num_predict": 80},
            }
            status, lines = _stream_lines(client, "/api/chat", body, USER)
    assert status == 200
    assert lines[-1][1]["done"] is True and len(lines) > 20
    first, last = lines[0][0], lines[-1][0]
    assert first < last / 3, (first, last)


def test_tls_edge_redirects_http_and_sends_hsts(replicas, tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    port, plain = free_port(), free_port()
    stack = tmp_path / "stack.yaml"
    text = _stack([replicas[0].host_env], port).replace(
        "  clients:\n",
        f"  server_name: llm.localhost\n  tls: {{cert: {cert}, key: {key}, redirect_listen: \"127.0.0.1:{plain}\"}}\n"
        "  clients:\n",
    )
    stack.write_text(text)
    assert main(["render", "-f", str(stack)]) == 0
    with Nginx(tmp_path / "rendered" / "nginx", port):
        r = httpx.get(f"http://127.0.0.1:{plain}/api/tags?x=1", headers={"Host": "llm.localhost"})
        assert r.status_code == 301
        assert r.headers["location"] == f"https://llm.localhost:{port}/api/tags?x=1"
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=30) as client:
            kw = {"extensions": {"sni_hostname": "llm.localhost"}}
            r = client.get("/api/tags", headers={"Host": "llm.localhost"}, **kw)
            assert r.status_code == 401 and r.json()["error"].startswith("unauthorized")
            assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
            r = client.get("/api/tags", headers={"Host": "llm.localhost", **_auth(USER)}, **kw)
            assert r.status_code == 200 and "models" in r.json()
            assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        # TLS 1.2 is the oldest protocol offered: a client capped at 1.2 still connects.
        ctx12 = ssl.create_default_context(cafile=str(cert))
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx12, timeout=30) as client:
            r = client.get("/api/version", headers={"Host": "llm.localhost", **_auth(USER)}, **kw)
            assert r.status_code == 200


class _UpgradeEcho:
    """A bare TCP stand-in for Open WebUI's socket endpoint: records the request head, answers
    101 Switching Protocols, then echoes bytes (what a WebSocket tunnel through nginx needs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.heads: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.decode("latin-1"))
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                for _ in range(100):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    conn.sendall(chunk)

    def close(self) -> None:
        self.sock.close()


def test_open_webui_host_gets_websocket_upgrade_without_a_bearer_token(replicas, tmp_path, monkeypatch):
    key = tmp_path / "webui-key"
    key.write_text("0123456789abcdef0123456789\n")
    for k, v in {**ENV, "WEBUI_ADMIN_PASSWORD": "pw-0123456789"}.items():
        monkeypatch.setenv(k, v)
    ui = _UpgradeEcho()
    port = free_port()
    stack = tmp_path / "stack.yaml"
    stack.write_text(
        _stack([replicas[0].host_env], port)
        + textwrap.dedent(
            f"""\
            webui:
              public_url: http://chat.localhost
              listen: 127.0.0.1:{ui.port}
              client: alice
              admin_email: admin@example.org
              admin_password_env: WEBUI_ADMIN_PASSWORD
              secret_key_file: {key}
            """
        )
    )
    try:
        assert main(["render", "-f", str(stack)]) == 0
        with Nginx(tmp_path / "rendered" / "nginx", port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(
                    b"GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: chat.localhost\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                assert head.startswith(b"HTTP/1.1 101 ")
                conn.sendall(b"ping through the tunnel")
                echoed = b""
                while len(echoed) < len(b"ping through the tunnel"):
                    echoed += conn.recv(4096)
                assert echoed == b"ping through the tunnel"
            # The same request on the API host needs a token.
            r = httpx.get(f"http://127.0.0.1:{port}/ws/socket.io/", headers={"Host": "other.localhost"})
            assert r.status_code == 401
    finally:
        ui.close()
    upstream_head = ui.heads[0].lower()
    assert "upgrade: websocket\r\n" in upstream_head and "connection: upgrade\r\n" in upstream_head
    assert "host: chat.localhost\r\n" in upstream_head


def test_concurrent_streams_per_client_are_capped_with_429(replicas, tmp_path, monkeypatch):
    """streams: 1 — while one /api/chat of a client is in flight, its second one gets 429."""
    with _render_and_start(tmp_path, [replicas[0].host_env], monkeypatch, streams=1) as nginx:
        with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as held:
            # Headers sent, body withheld: nginx holds the request (and its stream slot) reading the body.
            held.sendall(
                f"POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER}\r\n"
                "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n".encode()
            )
            with httpx.Client(base_url=nginx.url, timeout=30) as client:
                r = None
                for _ in range(50):  # bounded: until nginx has counted the held request
                    r = client.post("/api/chat", json={"model": "nope"}, headers=_auth(USER))
                    if r.status_code == 429:
                        break
                    time.sleep(0.02)
                assert r is not None and r.status_code == 429
                assert r.json() == {"error": "too many requests: rate limit exceeded, retry later"}
                # Another client has its own slot; read routes are not streams.
                assert client.post("/api/chat", json={"model": "nope"}, headers=_auth(OTHER)).status_code == 404
                assert client.get("/api/tags", headers=_auth(USER)).status_code == 200
                held.sendall(b"{}")
                assert held.recv(4096).startswith(b"HTTP/1.1 400")
                held.close()
                # The slot frees when nginx finalizes the held request (possibly in another worker).
                for _ in range(100):
                    r = client.post("/api/chat", json={"model": "nope"}, headers=_auth(USER))
                    if r.status_code != 429:
                        break
                    time.sleep(0.02)
                assert r.status_code == 404


def test_replicas_that_require_keys_get_their_key_from_nginx_never_the_clients_token(tmp_path, monkeypatch):
    """A replica on a network requires API keys; nginx sends the replicas' key (proxy.upstream_token_env)."""
    from toolchain import keys

    keys_file = tmp_path / "keys.json"
    replica_key = keys.add(keys_file, "edge", "admin")
    with start_server(tmp_path / "models", env={"CORRAL_KEYS_FILE": str(keys_file)}) as replica:
        assert httpx.get(replica.url + "/api/tags", headers=_auth(USER)).status_code == 401  # not a replica key
        # Without the upstream key, nginx strips the client's token and the replica refuses.
        (tmp_path / "plain").mkdir()
        (tmp_path / "keyed").mkdir()
        with _render_and_start(tmp_path / "plain", [replica.host_env], monkeypatch) as nginx:
            r = httpx.get(nginx.url + "/api/tags", headers=_auth(USER))
            assert r.status_code == 401 and r.headers["content-type"].startswith("application/json")
        monkeypatch.setenv("REPLICA_KEY", replica_key)
        with _render_and_start(tmp_path / "keyed", [replica.host_env], monkeypatch, upstream_env="REPLICA_KEY") as nginx:
            rendered = tmp_path / "keyed" / "rendered" / "nginx"
            assert stat.S_IMODE((rendered / "corral-upstream.conf").stat().st_mode) == 0o600
            assert replica_key not in (rendered / "corral.conf").read_text()
            with httpx.Client(base_url=nginx.url, timeout=60) as client:
                assert client.get("/api/tags", headers=_auth(USER)).status_code == 200
                assert client.get("/api/tags").status_code == 401  # nginx still judges the client first
                r = client.post("/api/create", json={"model": "x", "from": "nope"}, headers=_auth(USER))
                assert r.status_code == 403  # scopes are nginx's: the replica key is admin, the client is not
                r = client.post("/api/show", json={"model": "nope"}, headers=_auth(ADMIN))
                assert r.status_code == 404  # the replica's own answer, reached with its key
                # A route the replica keeps admin-only but nginx has no location for (an upload
                # session) and an unknown path: nginx would reach them with the replica's admin
                # key, so a user token is refused at the edge; an admin token gets the replica's answer.
                session = "/v2/library/x/blobs/uploads/0123456789abcdef0123456789abcdef"
                for path in (session, "/api/nope"):
                    r = client.get(path, headers=_auth(USER))
                    assert r.status_code == 403, path
                    assert r.json() == {"error": "forbidden: this route needs an admin token"}
                    assert client.get(path).status_code == 401, path
                r = client.get(session, headers=_auth(ADMIN))
                assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", r.text
                r = client.get("/api/nope", headers=_auth(ADMIN))
                assert r.status_code == 404, r.text
            log = nginx.access_log()
            assert replica_key not in log and USER not in log


@pytest.mark.skipif(os.geteuid() != 0, reason="as a non-root user every nginx test here already runs this way")
def test_nginx_runs_from_the_rendered_prefix_as_an_unprivileged_user(replicas, monkeypatch):
    """`nginx -p DIR/nginx -c nginx.conf` on the rendered files alone, as `nobody`: the pid,
    the logs and the temporary files all go under the prefix (its var/, rendered empty)."""
    root = Path(tempfile.mkdtemp(prefix="corral-nobody-"))  # outside pytest's root-only temp tree
    try:
        for key, value in ENV.items():
            monkeypatch.setenv(key, value)
        port = free_port()
        (root / "stack.yaml").write_text(_stack([replicas[0].host_env], port))
        assert main(["render", "-f", str(root / "stack.yaml")]) == 0
        for path in [root, *root.rglob("*")]:
            os.chown(path, 65534, 65534)  # what `stack render` run by that user would have written
        prefix = root / "rendered" / "nginx"
        with Nginx(prefix, port, as_user="nobody") as nginx, httpx.Client(base_url=nginx.url, timeout=30) as client:
            assert client.get("/api/tags").status_code == 401
            assert client.get("/api/tags", headers=_auth(USER)).status_code == 200
            big = b"{" + b" " * 50_000 + b"}"  # over the in-memory body buffer (under 64k): to var/client_body
            r = client.post("/api/show", content=big, headers={**_auth(USER), "Content-Type": "application/json"})
            assert r.status_code == 400, r.text  # the replica's own answer to a body without a model
            status = Path(f"/proc/{nginx.proc.pid}/status").read_text()
            assert re.search(r"^Uid:\s+65534\s+65534\s+65534\s+65534$", status, re.M), status
        var = prefix / "var"
        assert {"access.log", "error.log", "client_body"} <= {p.name for p in var.iterdir()}
        assert all(p.stat().st_uid == 65534 for p in var.rglob("*"))
        assert "client=alice " in (var / "access.log").read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
