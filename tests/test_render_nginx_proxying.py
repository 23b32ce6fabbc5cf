"""How the rendered nginx talks to the replicas, run for real (Debian's nginx with -p).

tests/test_render_nginx.py drives nginx in front of real `stack serve` replicas; here the
replicas are scripted stand-ins, so each proxying rule is checked where a real model server
cannot make it visible or deterministic: every streaming route passes each chunk on as it
arrives (also under a host nginx that gzips JSON), connections to a replica are kept alive
(HTTP/1.1), the read timeout is the stack's, a POST that reached a replica is never sent
to another, and a user token reaches the replicas (which nginx calls with its admin key) only
on the routes the server's route table gives `user`: every other path, known or not, is a 403
that never reaches a replica.
"""

from __future__ import annotations

import http.client
import json
import socketserver
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Optional

import httpx
import pytest

from tests.support.nginx import NGINX, Nginx, free_port
from toolchain.cli import main

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

USER = "user-0123456789abcdef"
ADMIN = "admin-0123456789abcdef"

#: The routes whose answers stream (NDJSON or server-sent events).
STREAMING = ["/api/generate", "/api/chat", "/api/pull", "/api/push", "/api/create", "/v1/chat/completions"]


class ScriptedUpstream:
    """A loopback HTTP/1.1 server standing in for a replica; `mode` says how it answers.

    - "ok": 200 with a small JSON body (keep-alive);
    - "stream": an NDJSON head line, then (once `release` is set, or after 5 s) the tail;
    - "slow": 200 after `delay` seconds;
    - "drop": reads the request, then closes the connection without an answer.

    It records each request as (method, path, HTTP version, Connection header), the
    Authorization header it came with in `authorizations`, and counts the TCP connections it
    accepted.
    """

    def __init__(self, mode: str = "ok", delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        self.requests: list[tuple[str, str, str, Optional[str]]] = []
        self.authorizations: list[Optional[str]] = []
        self.connections = 0
        self.release = threading.Event()
        self.tail_sent = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                upstream.connections += 1
                super().setup()

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                upstream.requests.append((self.command, self.path, self.request_version, self.headers.get("Connection")))
                upstream.authorizations.append(self.headers.get("Authorization"))
                if upstream.mode == "drop":
                    self.close_connection = True
                    return
                if upstream.mode == "stream":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    # Apart from the header, as a model's first token is: nginx passes on at once
                    # the body bytes that come with the header, buffered or not.
                    time.sleep(0.2)
                    self._chunk(b'{"part": "head"}\n')
                    upstream.release.wait(timeout=5)
                    upstream.tail_sent.set()
                    try:
                        self._chunk(b'{"part": "tail", "done": true}\n')
                        self._chunk(b"")
                    except OSError:  # the client stopped reading (a failed assertion)
                        self.close_connection = True
                    return
                if upstream.mode == "slow":
                    time.sleep(upstream.delay)
                body = b'{"models": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "ScriptedUpstream":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _render(root: Path, replicas: list[str], monkeypatch, *, extra: str = "") -> tuple[Path, int]:
    """Render a stack with these replicas under `root`; (nginx prefix, port)."""
    monkeypatch.setenv("USER_TOKEN", USER)
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN)
    port = free_port()
    targets = "".join(f'  r{i}: {{url: "http://{r}"}}\n' for i, r in enumerate(replicas, start=1))
    stack = root / "stack.yaml"
    stack.write_text(
        "version: 1\ntargets:\n" + targets + textwrap.dedent(
            f"""\
            models: {{}}
            proxy:
              listen: "127.0.0.1:{port}"
              clients:
                - {{name: alice, scope: user, token_env: USER_TOKEN}}
                - {{name: ops, scope: admin, token_env: ADMIN_TOKEN}}
              rate_limit: {{requests_per_second: 1000, burst: 1000}}
            """
        ) + extra
    )
    assert main(["render", "-f", str(stack)]) == 0
    return root / "rendered" / "nginx", port


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _with_host_gzip(prefix: Path) -> str:
    """A copy of the rendered nginx.conf with gzip on for JSON at http level, as a host nginx may
    have it; corral.conf must still pass streams on uncompressed (gzip holds data back)."""
    main_conf = (prefix / "nginx.conf").read_text()
    gzip = "    gzip on;\n    gzip_min_length 1;\n    gzip_types application/json application/x-ndjson text/event-stream;\n"
    (prefix / "nginx-gzip.conf").write_text(main_conf.replace("    include corral.conf;\n", gzip + "    include corral.conf;\n"))
    return "nginx-gzip.conf"


def _stream(client: httpx.Client, replica: ScriptedUpstream, path: str) -> Optional[str]:
    """POST a streaming request; its Content-Encoding, once the head line arrived while the
    replica still held the tail back (and the tail followed)."""
    replica.release.clear()
    replica.tail_sent.clear()
    headers = {**_auth(ADMIN), "Accept-Encoding": "gzip"}
    with client.stream("POST", path, json={"model": "m"}, headers=headers) as r:
        assert r.status_code == 200, path
        lines = r.iter_lines()
        assert json.loads(next(lines)) == {"part": "head"}, path
        assert not replica.tail_sent.is_set(), f"{path}: the head line was held back until the tail came"
        replica.release.set()
        assert json.loads(next(lines))["part"] == "tail", path
        return r.headers.get("content-encoding")


def test_every_streaming_route_passes_chunks_on_uncompressed_even_under_a_host_gzip(tmp_path, monkeypatch):
    """Each chunk reaches the client as the replica sends it, without gzip, also when the host
    nginx gzips JSON at http level (gzip holds data back to compress it in blocks).

    (nginx 1.22 passes small chunks on promptly even with `proxy_buffering on`, so that line
    is checked in the rendered text: test_render.py::test_each_route_gets_its_buffering_upstream_and_body_limit.)
    """
    with ScriptedUpstream("stream") as replica:
        prefix, port = _render(tmp_path, [replica.host], monkeypatch)
        with Nginx(prefix, port) as nginx, httpx.Client(base_url=nginx.url, timeout=30) as client:
            for path in STREAMING:
                assert _stream(client, replica, path) is None, path
        with Nginx(prefix, port, conf=_with_host_gzip(prefix)) as nginx:
            with httpx.Client(base_url=nginx.url, timeout=30) as client:
                for path in STREAMING:
                    assert _stream(client, replica, path) is None, path
        # The host setting above does compress these answers where corral.conf did not say `gzip off`.
        conf = prefix / "corral.conf"
        conf.write_text(conf.read_text().replace("    gzip off;\n", ""))
        with Nginx(prefix, port, conf=_with_host_gzip(prefix)) as nginx:
            with httpx.Client(base_url=nginx.url, timeout=30) as client:
                assert _stream(client, replica, "/api/chat") == "gzip"


def test_connections_to_a_replica_are_kept_alive_over_http_1_1(tmp_path, monkeypatch):
    with ScriptedUpstream("ok") as replica:
        prefix, port = _render(tmp_path, [replica.host], monkeypatch)
        with Nginx(prefix, port) as nginx, httpx.Client(base_url=nginx.url, timeout=30) as client:
            for _ in range(5):  # one client connection: one nginx worker, whose idle upstream connection is reused
                assert client.get("/api/tags", headers=_auth(USER)).status_code == 200
                assert client.post("/api/chat", json={"model": "m"}, headers=_auth(USER)).status_code == 200
    assert len(replica.requests) == 10
    assert {(version, connection) for _, _, version, connection in replica.requests} == {("HTTP/1.1", None)}
    assert replica.connections == 1


def test_the_read_timeout_is_the_stacks(tmp_path, monkeypatch):
    """A replica slower than `proxy.timeouts.read` gets a JSON 504; the default (10 minutes) waits."""
    with ScriptedUpstream("slow", delay=2.5) as replica:
        (tmp_path / "short").mkdir()
        prefix, port = _render(tmp_path / "short", [replica.host], monkeypatch, extra="  timeouts: {read: 1}\n")
        assert "    proxy_read_timeout 1s;\n" in (prefix / "corral.conf").read_text()
        with Nginx(prefix, port) as nginx:
            r = httpx.post(nginx.url + "/api/chat", json={"model": "m"}, headers=_auth(USER), timeout=30)
            assert r.status_code == 504
            assert r.json() == {"error": "the model server did not answer in time"}
        (tmp_path / "default").mkdir()
        prefix, port = _render(tmp_path / "default", [replica.host], monkeypatch)
        assert "    proxy_read_timeout 600s;\n" in (prefix / "corral.conf").read_text()
        with Nginx(prefix, port) as nginx:
            r = httpx.post(nginx.url + "/api/chat", json={"model": "m"}, headers=_auth(USER), timeout=30)
            assert r.status_code == 200


def test_a_post_that_reached_a_replica_is_never_sent_to_another(tmp_path, monkeypatch):
    """Both replicas take the request and hang up: a POST (a generation, a create) is not
    repeated on the other replica; an idempotent GET is (so the count below can tell)."""
    with ScriptedUpstream("drop") as first, ScriptedUpstream("drop") as second:
        # max_fails 0: a failure does not take a replica out, so every request can choose either.
        prefix, port = _render(tmp_path, [first.host, second.host], monkeypatch, extra="  max_fails: 0\n")
        with Nginx(prefix, port) as nginx, httpx.Client(base_url=nginx.url, timeout=30) as client:
            for path, token in (("/api/chat", USER), ("/api/generate", USER), ("/v1/chat/completions", USER),
                                ("/api/create", ADMIN)):
                before = len(first.requests) + len(second.requests)
                r = client.post(path, json={"model": "m"}, headers=_auth(token))
                assert r.status_code == 502 and r.json() == {"error": "no model server is reachable"}, path
                assert len(first.requests) + len(second.requests) - before == 1, path
            r = client.get("/api/tags", headers=_auth(USER))
            assert r.status_code == 502
    gets = [(m, p) for m, p, _, _ in first.requests + second.requests if m == "GET"]
    assert gets == [("GET", "/api/tags")] * 2  # retried on the other replica


#: Routes toolchain/routes.py gives `user` (or public): a user token reaches the replica.
USER_ALLOWED = [
    ("GET", "/"), ("GET", "/api/tags"), ("HEAD", "/api/tags"), ("GET", "/api/ps"), ("GET", "/api/version"),
    ("GET", "/metrics"), ("GET", "/api/corral/store"), ("POST", "/api/generate"), ("POST", "/api/chat"),
    ("POST", "/api/embed"), ("POST", "/api/embeddings"), ("POST", "/api/show"), ("GET", "/v1/models"),
    ("GET", "/v1/models/llama3:8b"), ("POST", "/v1/chat/completions"), ("GET", "/v2/"),
    ("GET", "/v2/library/x/manifests/latest"), ("HEAD", "/v2/library/x/blobs/sha256:" + "0" * 64),
]

#: Everything else needs an admin token: routes the server keeps admin-only that nginx has no
#: location of its own for (an upload session), unknown paths, a route the server may add later,
#: a user route under a method it does not allow, and paths nginx normalizes before judging
#: (the replica gets them as sent: `/v2/library/x/blobs/uploads/..` is an upload session there).
USER_DENIED = [
    ("GET", "/v2/library/x/blobs/uploads/abc"), ("HEAD", "/v2/library/x/blobs/uploads/abc"),
    ("PATCH", "/v2/library/x/blobs/uploads/abc"), ("PUT", "/v2/library/x/manifests/latest"),
    ("GET", "/api/nope"), ("GET", "/debug/pprof"), ("POST", "/api/lock"), ("POST", "/api/generate/"),
    ("DELETE", "/v1/models/x"), ("OPTIONS", "/api/tags"), ("POST", "/api/create"), ("GET", "/api/corral/lock"),
    ("GET", "/v2/library/x/blobs/uploads/.."), ("GET", "/v2/library/x/blobs/uploads/%2e%2e"),
    ("GET", "/v1/../api/tags"), ("GET", "/api//tags"),
]

REPLICA_KEY = "replica-0123456789abcdef"


def _raw(port: int, method: str, path: str, token: Optional[str]) -> tuple[int, dict[str, str], bytes]:
    """One request with the path exactly as given (httpx would resolve dot segments first)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_a_user_token_reaches_only_the_user_routes_of_the_servers_table(tmp_path, monkeypatch):
    """Deny by default at the edge: nginx calls the replicas with their admin key, so a route it
    let through for a user token would run as admin there. A user token gets 403 (JSON, nothing
    sent to a replica) on every route but the table's user ones; no token gets 401 (JSON); an
    admin token passes everywhere, with the replicas' key and never its own."""
    monkeypatch.setenv("REPLICA_KEY", REPLICA_KEY)
    with ScriptedUpstream("ok") as replica:
        prefix, port = _render(tmp_path, [replica.host], monkeypatch, extra="  upstream_token_env: REPLICA_KEY\n")
        with Nginx(prefix, port):
            for method, path in USER_ALLOWED:
                before = len(replica.requests)
                status, _, _ = _raw(port, method, path, USER)
                assert status == 200, (method, path, status)
                assert [(m, p) for m, p, _, _ in replica.requests[before:]] == [(method, path)]
            for method, path in USER_DENIED:
                before = len(replica.requests)
                status, headers, body = _raw(port, method, path, USER)
                assert status == 403, (method, path, status)
                assert headers["content-type"] == "application/json", (method, path)
                if method != "HEAD":
                    assert json.loads(body) == {"error": "forbidden: this route needs an admin token"}, (method, path)
                status, headers, body = _raw(port, method, path, None)
                assert status == 401, (method, path, status)
                assert headers["www-authenticate"] == 'Bearer realm="corral"'
                if method != "HEAD":
                    assert json.loads(body) == {"error": "unauthorized: a valid bearer token is required"}
                assert len(replica.requests) == before, (method, path)  # neither reached a replica
                status, _, _ = _raw(port, method, path, ADMIN)
                assert status == 200, (method, path, status)
                # The replica gets the path as the client sent it (dot segments included).
                assert [(m, p) for m, p, _, _ in replica.requests[before:]] == [(method, path)]
    assert replica.authorizations and set(replica.authorizations) == {f"Bearer {REPLICA_KEY}"}
