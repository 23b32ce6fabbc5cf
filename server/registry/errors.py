"""Errors of the registry client (pull and push).

`RegistryError.message` is what the API streams as `{"error": ...}`, using Ollama's
wording where Ollama has one; `status` is the HTTP status a non-streaming request
answers with (4xx for the caller's mistakes, 404 for a missing model, 502 when the
remote registry misbehaves, 507 when the disk is full).
"""

from __future__ import annotations

__all__ = ["RegistryError", "NOT_FOUND"]

#: Ollama's text for a 404 from the registry (Go's os.ErrNotExist).
NOT_FOUND = "file does not exist"


class RegistryError(Exception):
    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def prefixed(self, prefix: str) -> "RegistryError":
        return RegistryError(f"{prefix}: {self.message}", self.status)
