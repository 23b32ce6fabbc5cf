"""A small synchronous client for the public Ollama API (works against Ollama and `stack serve`).

The CLI, plan and apply talk to servers only through this module. Errors become
`toolchain.errors.APIError` (with the server's message and status) or `ConnectError`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import httpx

from toolchain.errors import APIError, ConnectError

DEFAULT_HOST = "127.0.0.1:11434"


def base_url(host: str | None = None) -> str:
    """Ollama's `OLLAMA_HOST` rules: scheme and port optional; default http://127.0.0.1:11434.

    Without a scheme the port defaults to 11434; `http://h` means port 80 and `https://h` 443.
    An unspecified bind address (0.0.0.0) is reached through loopback.
    """
    raw = (host if host is not None else os.environ.get("OLLAMA_HOST", "")).strip().strip("\"'") or DEFAULT_HOST
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest, port = "http", raw, "11434"
    else:
        port = "443" if scheme == "https" else "80"
    hostport, _, path = rest.partition("/")
    name, colon, given = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not colon:
        name, given = hostport, ""
    name = name or "127.0.0.1"
    if name in ("0.0.0.0", "[::]"):
        name = "127.0.0.1"
    suffix = "/" + path.strip("/") if path.strip("/") else ""
    return f"{scheme}://{name}:{given or port}{suffix}"


class Client:
    """Calls one server. `token` is sent as a Bearer token (default: `CORRAL_TOKEN`)."""

    def __init__(self, host: str | None = None, *, token: str | None = None, timeout: float | None = None) -> None:
        self.url = base_url(host)
        token = token if token is not None else os.environ.get("CORRAL_TOKEN") or None
        headers = {"User-Agent": "corral-stack"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ConnectError(f"could not connect to {self.url}: is the server running?") from exc
        except httpx.TimeoutException as exc:
            raise ConnectError(f"timed out talking to {self.url}") from exc
        if response.status_code >= 400:
            raise APIError(_error_message(response), response.status_code)
        return response

    def json(self, method: str, path: str, body: Any = None) -> Any:
        response = self.request(method, path, json=body)
        return response.json() if response.content else None

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and yield each NDJSON object; an `error` line raises APIError."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise APIError(_error_message(response), response.status_code)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    if obj.get("error"):
                        raise APIError(str(obj["error"]), -1)
                    yield obj
        except httpx.ConnectError as exc:
            raise ConnectError(f"could not connect to {self.url}: is the server running?") from exc

    # -- endpoints ------------------------------------------------------------------

    def version(self) -> str:
        return self.json("GET", "/api/version")["version"]

    def tags(self) -> list[dict[str, Any]]:
        return self.json("GET", "/api/tags").get("models") or []

    def show(self, model: str, verbose: bool = False) -> dict[str, Any]:
        return self.json("POST", "/api/show", {"model": model, "verbose": verbose})

    def ps(self) -> list[dict[str, Any]]:
        return self.json("GET", "/api/ps").get("models") or []

    def copy(self, source: str, destination: str) -> None:
        self.request("POST", "/api/copy", json={"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self.request("DELETE", "/api/delete", json={"model": model})

    def has_blob(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/api/blobs/{digest}")
        except APIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_blob(self, digest: str, content: Any) -> None:
        self.request("POST", f"/api/blobs/{digest}", content=content)

    def create(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/create", body)

    def pull(self, model: str, insecure: bool = False) -> Iterator[dict[str, Any]]:
        return self.stream("/api/pull", {"model": model, "insecure": insecure})

    def push(self, model: str, insecure: bool = False) -> Iterator[dict[str, Any]]:
        return self.stream("/api/push", {"model": model, "insecure": insecure})

    def generate(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/generate", body)

    def chat(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/chat", body)

    # -- the apply lock of `stack serve` (a real Ollama answers 404: it has none) --------------

    def lock_acquire(self, owner: str, ttl: float) -> dict[str, Any]:
        """Take the server's apply lock: {"id", "owner", "since", "expires_at", "ttl"}; 409 when held."""
        return self.json("POST", "/api/corral/lock", {"owner": owner, "ttl": ttl})

    def lock_renew(self, lock_id: str, ttl: float) -> dict[str, Any]:
        return self.json("PUT", f"/api/corral/lock/{lock_id}", {"ttl": ttl})

    def lock_release(self, lock_id: str) -> None:
        self.request("DELETE", f"/api/corral/lock/{lock_id}")

    def lock_holder(self) -> dict[str, Any]:
        return self.json("GET", "/api/corral/lock")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text or f"{response.status_code} {response.reason_phrase}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
    return f"{response.status_code} {response.reason_phrase}"
