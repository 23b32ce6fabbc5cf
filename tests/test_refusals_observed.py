"""Answers given by the limits, before or without the app, are counted in `/metrics` and logged
like every other request, on a real `stack serve` with small limits: the 408 of the header-read
timeout, the 431 of an oversized head, the 400 of a head h11 cannot parse (those three come from
`server.http_protocol`, before any ASGI code), the 413 of the body limit and the 503 of the
connection limit (`server.limits`). Each is asserted byte for byte, then found in the metrics and
as one JSON access-log line; the server answers `GET /` promptly afterwards.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from server.http_protocol import INVALID_RESPONSE, TIMEOUT_RESPONSE, TOO_LARGE_RESPONSE
from tests.support.server import get_root, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    env = {"CORRAL_HEADER_TIMEOUT": "1", "CORRAL_IDLE_TIMEOUT": "30", "CORRAL_MAX_CONNECTIONS": "3",
           "CORRAL_MAX_BODY_BYTES": "1000"}
    with start_server(tmp_path_factory.mktemp("m"), env=env) as s:
        yield s


def exchange(srv, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    out = b""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        for _ in range(1000):  # bounded; the server closes the connection
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def counted(srv, method: str, route: str, status: int) -> float:
    prefix = f'corral_http_requests_total{{method="{method}",route="{route}",status="{status}"}} '
    for line in httpx.get(srv.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def logged(srv, status: int) -> list[dict]:
    lines = [json.loads(x) for x in srv.log().splitlines() if x.startswith("{")]
    return [x for x in lines if x["status"] == status]


def until(predicate, what: str) -> None:
    for _ in range(200):  # bounded: counting and logging follow the answer's last byte
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def served_promptly(srv) -> None:
    deadline = time.monotonic() + 1.0
    while True:  # within a second (a closed connection may take a moment to leave the count)
        try:
            r = httpx.get(srv.url + "/", timeout=1.0)
            if (r.status_code, r.text) == (200, "Ollama is running"):
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "GET / not answered within a second"
        time.sleep(0.02)


@pytest.mark.parametrize("response, status, message", [
    (TIMEOUT_RESPONSE, b"408 Request Timeout", "request header timeout"),
    (TOO_LARGE_RESPONSE, b"431 Request Header Fields Too Large", "request header fields too large"),
    (INVALID_RESPONSE, b"400 Bad Request", "invalid HTTP request"),
])
def test_the_protocols_refusals_are_in_ollamas_error_shape(response, status, message):
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 " + status
    assert set(lines[1:]) == {b"content-type: application/json; charset=utf-8", b"connection: close",
                              b"content-length: %d" % len(body)}
    assert json.loads(body) == {"error": message}


def test_header_timeout_408_is_counted_and_logged(srv):
    assert exchange(srv, b"POST /api/create HTTP/1.1\r\nHost: local") == TIMEOUT_RESPONSE
    until(lambda: counted(srv, "POST", "unmatched", 408) == 1, "the 408 counted")
    until(lambda: logged(srv, 408), "the 408 logged")
    line = logged(srv, 408)[-1]
    assert {k: line[k] for k in ("client", "method", "route", "path", "status", "error")} == {
        "client": None, "method": "POST", "route": "unmatched", "path": None, "status": 408,
        "error": "request header timeout"}
    assert 900 <= line["duration_ms"] < 30_000 and set(line) >= {"time", "first_byte_ms"}
    # a connection that never sends a byte has no method
    assert exchange(srv, b"") == TIMEOUT_RESPONSE
    until(lambda: counted(srv, "", "unmatched", 408) == 1, "the silent 408 counted")
    served_promptly(srv)


def test_oversized_head_431_is_counted_and_logged(srv):
    assert exchange(srv, b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n") \
        == TOO_LARGE_RESPONSE
    until(lambda: counted(srv, "GET", "unmatched", 431) == 1, "the 431 counted")
    until(lambda: logged(srv, 431), "the 431 logged")
    assert logged(srv, 431)[-1]["error"] == "request header fields too large"
    served_promptly(srv)


def test_unparsable_head_400_is_counted_and_logged(srv):
    reply = exchange(srv, b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nno colon in this header\r\n\r\n")
    assert reply == INVALID_RESPONSE
    until(lambda: counted(srv, "POST", "unmatched", 400) == 1, "the 400 counted")
    until(lambda: logged(srv, 400), "the 400 logged")
    assert logged(srv, 400)[-1]["error"] == "invalid HTTP request"
    served_promptly(srv)


def test_body_limit_413_is_counted_and_logged(srv):
    r = httpx.post(srv.url + "/api/show", content=b" " * 1001)
    assert (r.status_code, r.json()) == (413, {"error": "request body larger than 1000 bytes"})
    until(lambda: counted(srv, "POST", "unmatched", 413) == 1, "the 413 counted")
    line = logged(srv, 413)[-1]
    assert (line["method"], line["path"], line["route"]) == ("POST", "/api/show", "unmatched")
    served_promptly(srv)


def test_connection_limit_503_is_counted_and_logged(srv):
    held = []
    try:
        for _ in range(3):  # three kept-alive connections: the limit
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            get_root(s)
            held.append(s)
        r = httpx.get(srv.url + "/api/tags")  # a fourth
        assert (r.status_code, r.json()) == (503, {"error": "server busy: more than 3 connections or requests at once"})
        assert r.headers["connection"] == "close"
        r = httpx.get(srv.url + "/v1/models")
        assert (r.status_code, r.json()["error"]["code"]) == (503, "server_busy")
    finally:
        for s in held:
            s.close()
    served_promptly(srv)
    until(lambda: counted(srv, "GET", "unmatched", 503) == 2, "the 503s counted")
    line = logged(srv, 503)[0]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/tags", 503)
