"""A header-read timeout for uvicorn's h11 protocol: uvicorn itself has none.

uvicorn (0.54) arms no timer while a request's head arrives. Its `timeout_keep_alive` runs only
between requests and the first byte of the next request cancels it; `h11_max_incomplete_event_size`
bounds the head's size, not its time. So a client that sends its request line and headers slowly
(slowloris), or connects and sends nothing, holds its connection for as long as it likes. A pure
ASGI middleware cannot help: the app sees a request only once its head is complete.

`HeaderTimeoutProtocol` is uvicorn's `H11Protocol` with one timer: armed when a connection opens
and when the first bytes of a new request arrive on an idle keep-alive connection, stopped as soon
as h11 has the whole request head (its peer leaves the IDLE state). When it fires, the client gets
`408 Request Timeout` and the connection is closed. The time counts from the first byte (or the
connection), not from the last one, so trickling a byte at a time does not extend it. Pipelined
requests behind one in progress are not timed (uvicorn pauses reading for them).

`stack serve` passes `protocol(seconds)` as uvicorn's `http=` (`CORRAL_HEADER_TIMEOUT`, 0 = off).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutProtocol", "protocol", "TIMEOUT_RESPONSE"]

_BODY = b"request header timeout"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            if data and self._header_timer is None:
                self._arm_header_timer()  # a new request began on a kept-alive connection
        else:
            self._cancel_header_timer()  # the head is complete (or the connection is done)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
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
        self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


def protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's `http=`, timing request heads out after `seconds`."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(seconds)})
