"""Errors of the registry client (pull and push).

`RegistryError` is a `server.errors.ServerError`: `message` is what the API sends as
`{"error": ...}` (Ollama's wording where Ollama has one) and `status` the HTTP status of
a non-streaming answer: 4xx for the caller's mistakes, 404 for a model that does not
exist, 502 when the remote registry fails or sends bad data (Ollama answers 500), 507
when the disk is full.
"""

from __future__ import annotations

from server.errors import ServerError

__all__ = ["RegistryError", "NOT_FOUND"]

#: Ollama's text for a 404 from the registry (Go's os.ErrNotExist).
NOT_FOUND = "file does not exist"


class RegistryError(ServerError):
    status = 502

    def prefixed(self, prefix: str) -> "RegistryError":
        return RegistryError(f"{prefix}: {self.message}", self.status)
