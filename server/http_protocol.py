"""uvicorn's h11 protocol with what `stack serve` needs and uvicorn lacks: a header-read timeout,
a 431 for an oversized head, and a report of every answer it gives without the app.

**Header-read timeout.** uvicorn (0.54) arms no timer while a request's head arrives. Its
`timeout_keep_alive` runs only between requests and the first byte of the next request cancels it;
`h11_max_incomplete_event_size` bounds the head's size, not its time. So a client that sends its
request line and headers slowly (slowloris), or connects and sends nothing, holds its connection
for as long as it likes. A pure ASGI middleware cannot help: the app sees a request only once its
head is complete. `CorralProtocol` arms one timer when a connection opens and when the first bytes
of a new request arrive on an idle keep-alive connection, and stops it as soon as h11 has the whole
request head (its peer leaves the IDLE state). When it fires, the client gets `408 Request Timeout`
and the connection is closed. The time counts from the first byte (or the connection), not from the
last one, so trickling a byte at a time does not extend it. Pipelined requests behind one in
progress are not timed (uvicorn pauses reading for them).

**Answers without the app.** A timed-out head (408), a head larger than h11's limit (431 where
uvicorn says 400) and a head h11 cannot parse (400) are answered here, before any ASGI code runs,
in Ollama's `{"error": ...}` shape (uvicorn's own 400 is plain text), and the connection closed; `on_refused(status, method, reason, seconds)` reports each one (`stack serve` passes
`server.observe.Metrics.refused`, so they are counted and logged like every other request).

**Connection count.** Every request's scope carries `scope["extensions"]["corral.connections"]`,
the number of open connections, so the connection limit can be enforced by `server.limits` in the
app, where its 503 is shaped, counted and logged as any other answer.

`stack serve` passes `protocol(seconds, on_refused)` as uvicorn's `http=` (`CORRAL_HEADER_TIMEOUT`,
0 = off). It relies on `H11Protocol` internals: re-check when uvicorn is upgraded.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["CorralProtocol", "protocol", "INVALID_RESPONSE", "TIMEOUT_RESPONSE", "TOO_LARGE_RESPONSE"]

#: on_refused(status, method or "", reason, seconds since the connection or the request's first byte)
OnRefused = Callable[[int, str, str, float], None]

_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


def _refusal(status: int, phrase: str, message: str) -> bytes:
    """A complete response in Ollama's error shape (the path is not known yet, so no other shape
    applies), closing the connection."""
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json; charset=utf-8\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


TIMEOUT_RESPONSE = _refusal(408, "Request Timeout", "request header timeout")
TOO_LARGE_RESPONSE = _refusal(431, "Request Header Fields Too Large", "request header fields too large")
INVALID_RESPONSE = _refusal(400, "Bad Request", "invalid HTTP request")


class CorralProtocol(H11Protocol):
    header_timeout: float = 10.0
    on_refused: Optional[OnRefused] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._head_started = time.perf_counter()
        self._head_prefix = b""  # the first bytes of the request head being read (for its method)
        self._max_head = self.conn._max_incomplete_event_size  # h11's limit, as uvicorn configured it
        app = self.app

        async def counted(scope: dict, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["corral.connections"] = len(self.connections)
            await app(scope, receive, send)

        self.app = counted

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and len(self._head_prefix) < 8:
            self._head_prefix += data[: 8 - len(self._head_prefix)]
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if data and self._header_timer is None and not self.transport.is_closing():
                self._arm_header_timer()  # a new request began on a kept-alive connection
        else:
            self._cancel_header_timer()  # the head is complete (or the connection is done)
            self._head_prefix = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the head: 431 when it outgrew the limit (h11's own hint), else 400 (where
        uvicorn would answer in plain text)."""
        self._cancel_header_timer()
        buffered, _ = self.conn.trailing_data
        if len(buffered) > self._max_head:
            self._refuse(431, TOO_LARGE_RESPONSE, "request header fields too large")
        else:
            self._refuse(400, INVALID_RESPONSE, "invalid HTTP request")

    def _arm_header_timer(self) -> None:
        self._head_started = time.perf_counter()
        if self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self._unset_keepalive_if_required()
        self._refuse(408, TIMEOUT_RESPONSE, "request header timeout")

    def _refuse(self, status: int, response: bytes, reason: str) -> None:
        self.transport.write(response)
        self.transport.close()
        self._report(status, reason)

    def _report(self, status: int, reason: str) -> None:
        if self.on_refused is not None:
            head = self._head_prefix
            method = head.split(b" ", 1)[0].decode("latin-1") if b" " in head else ""
            self.on_refused(status, method if method in _METHODS else "", reason,
                            time.perf_counter() - self._head_started)


def protocol(seconds: float, on_refused: Optional[OnRefused] = None) -> type[CorralProtocol]:
    """The protocol class for uvicorn's `http=`: request heads time out after `seconds` (0 = never),
    and answers given without the app are reported to `on_refused`."""
    attrs = {"header_timeout": float(seconds), "on_refused": staticmethod(on_refused) if on_refused else None}
    return type("CorralProtocol", (CorralProtocol,), attrs)
