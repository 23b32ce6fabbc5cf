"""The server's exceptions, in one place.

`ServerError` is the root; each subclass carries the HTTP status it maps to and a message that is
sent as `{"error": message}` by `server.app` (Ollama's exact text where Ollama has one). Store and
route code raise these; nothing else turns exceptions into responses.

    ServerError (500)
    ├── BadRequest (400)
    │   ├── InvalidDigest        "invalid digest format"
    │   ├── DigestMismatch       digest mismatch, expected "<a>", got "<b>"
    │   ├── InvalidName          "invalid model name" (or a route-specific wording)
    │   ├── InvalidModel         a GGUF that is not GGUF, truncated, or malformed
    │   └── MissingBlob          a manifest or request names a blob the store does not have
    ├── PayloadTooLarge (413)
    └── NotFound (404)
        ├── ModelNotFound
        └── BlobNotFound
"""

from __future__ import annotations


class ServerError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ServerError):
    status = 400


class NotFound(ServerError):
    status = 404


class PayloadTooLarge(ServerError):
    status = 413


class InvalidDigest(BadRequest):
    def __init__(self, message: str = "invalid digest format") -> None:
        super().__init__(message)


class DigestMismatch(BadRequest):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"')
        self.expected = expected
        self.got = got


class InvalidName(BadRequest):
    def __init__(self, message: str = "invalid model name") -> None:
        super().__init__(message)


class InvalidModel(BadRequest):
    """A model file the server cannot use (not GGUF, truncated, malformed header)."""


class MissingBlob(BadRequest):
    def __init__(self, digest: str, what: str = "blob") -> None:
        super().__init__(f'{what} "{digest}" not found')
        self.digest = digest


class ModelNotFound(NotFound):
    pass


class BlobNotFound(NotFound):
    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')
        self.digest = digest
