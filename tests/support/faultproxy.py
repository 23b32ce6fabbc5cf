"""A small fault-injecting HTTP proxy for registry tests (loopback only, one request per connection).

`FaultProxy(upstream_port)` listens on a free loopback port and forwards each request to
the upstream server, forcing ``Connection: close`` on both sides so every request is a
new connection it can see and break. Rules decide, per request, what happens instead:

* `Cut(after)`: forward, but relay only `after` bytes of the response body, then
  reset the connection (a connection cut mid-blob);
* `Hold(after, event)`: relay `after` body bytes, wait until `event` is set, go on;
* `Respond(status, body, headers)`: answer without asking upstream (404, 500, ...);
* `Garbage(data)`: send `data` (not HTTP) and close.

A rule is `(predicate, action, times)`: the first rule whose predicate accepts the
request and has uses left applies. Every request is recorded in `seen`.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Cut:
    after: int


@dataclass
class Hold:
    after: int
    event: threading.Event


@dataclass
class Respond:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Garbage:
    data: bytes = b"\x00\xffnot http at all\r\n\r\n"


Action = Cut | Hold | Respond | Garbage


@dataclass
class Rule:
    predicate: Callable[[Seen], bool]
    action: Action
    times: int = 1


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head ended")
        data += chunk
        if len(data) > 1 << 20:
            raise ConnectionError("head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _with_close(head: bytes) -> bytes:
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n"


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, predicate: Callable[[Seen], bool], action: Action, times: int = 1) -> None:
        with self._lock:
            self.rules.append(Rule(predicate, action, times))

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method) and contains in s.path]

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for t in self._threads:
            t.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _pick(self, seen: Seen) -> Action | None:
        with self._lock:
            self.seen.append(seen)
            for rule in self.rules:
                if rule.times > 0 and rule.predicate(seen):
                    rule.times -= 1
                    return rule.action
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        pump = None
        try:
            head, rest = _read_head(client)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers[k.strip().lower()] = v.strip()
            action = self._pick(Seen(method, path, headers))
            if isinstance(action, Respond):
                reason = {404: "Not Found", 500: "Internal Server Error"}.get(action.status, "Status")
                hdrs = {"Content-Length": str(len(action.body)), "Connection": "close", **action.headers}
                out = f"HTTP/1.1 {action.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
                client.sendall(out.encode() + b"\r\n" + action.body)
                return
            if isinstance(action, Garbage):
                client.sendall(action.data)
                return
            upstream = socket.create_connection(self.upstream)
            upstream.sendall(_with_close(head) + rest)
            pump = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            pump.start()
            rhead, body = _read_head(upstream)
            client.sendall(_with_close(rhead))
            limit = action.after if isinstance(action, (Cut, Hold)) else None
            sent = 0
            while True:
                if limit is not None and sent + len(body) >= limit:
                    client.sendall(body[: limit - sent])
                    body = body[limit - sent :]
                    sent = limit
                    if isinstance(action, Cut):
                        # RST instead of FIN: the client sees a broken connection mid-body.
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        return
                    action.event.wait(timeout=60)
                    limit = None
                    continue
                client.sendall(body)
                sent += len(body)
                body = upstream.recv(65536)
                if not body:
                    return
        except (OSError, ConnectionError, ValueError):
            return
        finally:
            # shutdown() wakes the pump thread's recv (a plain close() from this thread would
            # not, and the socket would stay open); close() then sends FIN, or RST after Cut.
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass
            if pump is not None:
                pump.join(timeout=10)
            if upstream is not None:
                upstream.close()
            client.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
