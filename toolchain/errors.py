"""The toolchain's exceptions, in one place.

`CorralError` is the root: the CLI prints its message as one line and exits 1.
`APIError` carries an HTTP status and the server's `{"error": ...}` message.
"""

from __future__ import annotations


class CorralError(Exception):
    """A failure the user can act on; its message is shown as is."""


class APIError(CorralError):
    """A server answered with an error status (or an error line inside a stream)."""

    def __init__(self, message: str, status: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ConnectError(CorralError):
    """The server could not be reached."""
