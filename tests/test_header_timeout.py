"""The header-read timeout (`server.http_protocol`) on a real `stack serve`.

uvicorn has none of its own; with `CORRAL_HEADER_TIMEOUT=1` a client that stalls in its request
head, or trickles it a byte at a time, gets 408 and a closed connection, on a fresh connection and
on a kept-alive one, while other clients are served; a client that sent its head in time may send
its body slowly. With `CORRAL_IDLE_TIMEOUT=1` an idle kept-alive connection is closed after a second.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from server.config import Config
from server.http_protocol import TIMEOUT_RESPONSE
from tests.support.server import get_root, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("m"), env={"CORRAL_HEADER_TIMEOUT": "1", "CORRAL_IDLE_TIMEOUT": "30"}) as s:
        yield s


def connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=30)


def read_all(s: socket.socket) -> bytes:
    out = b""
    for _ in range(1000):  # bounded; the server closes the connection
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def test_a_stalled_request_head_gets_408_and_others_are_served(srv):
    with connect(srv) as s:
        s.sendall(b"POST /api/create HTTP/1.1\r\nHost: local")
        assert httpx.get(f"{srv.url}/").text == "Ollama is running"  # not blocked meanwhile
        assert read_all(s) == TIMEOUT_RESPONSE


def test_a_connection_that_sends_nothing_is_closed_with_408(srv):
    with connect(srv) as s:
        assert read_all(s) == TIMEOUT_RESPONSE


def test_trickling_the_head_does_not_extend_the_timeout(srv):
    with connect(srv) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        s.settimeout(0.1)
        reply = b""
        for _ in range(300):  # a byte every 0.1 s, for at most 30 s: the head never ends
            try:
                s.sendall(b"a")
                reply += s.recv(65536)
                if reply.endswith(TIMEOUT_RESPONSE):
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert reply == TIMEOUT_RESPONSE


def test_a_kept_alive_connection_is_timed_per_request(srv):
    with connect(srv) as s:
        assert get_root(s).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET / HTTP/1.1\r\nHost: loc")  # the next request stalls in its head
        assert read_all(s) == TIMEOUT_RESPONSE


def test_a_slow_body_after_a_timely_head_is_not_cut(srv):
    body = b'{"model": "absent"}'
    with connect(srv) as s:
        s.sendall(b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        s.settimeout(1.5)
        with pytest.raises(socket.timeout):  # longer than the header timeout: nothing comes back
            s.recv(65536)
        s.settimeout(30)
        s.sendall(body)
        reply = read_all(s)
    assert reply.startswith(b"HTTP/1.1 404") and b"not found" in reply


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(tmp_path):
    """`CORRAL_IDLE_TIMEOUT=1` (uvicorn's default would be 5 s): a connection left idle after an
    answer is closed, silently, about a second later."""
    with start_server(tmp_path / "m", env={"CORRAL_IDLE_TIMEOUT": "1", "CORRAL_HEADER_TIMEOUT": "30"}) as idle:
        with connect(idle) as s:
            get_root(s)
            answered = time.monotonic()
            rest = read_all(s)
            idle_for = time.monotonic() - answered
        assert rest == b"" and 0.5 < idle_for < 4, idle_for  # closed without a word, well before 5 s
        assert httpx.get(f"{idle.url}/").text == "Ollama is running"


def test_the_setting():
    assert Config.from_env({}).header_timeout == 10
    assert Config.from_env({"CORRAL_HEADER_TIMEOUT": "0"}).header_timeout == 0
