"""HTTP plumbing shared by pull and push: one remote repository, bounded reads, auth, redirects.

Everything a remote registry sends is untrusted:

* bodies are read raw (``Accept-Encoding: identity``; a compressed answer is refused,
  so no gzip bomb can inflate) and only up to a limit;
* redirects are followed only to the same scheme, host and port, at most 5 times
  (no SSRF through ``Location``, CVE-2026-5530);
* a 401 challenge is answered once: Basic credentials, or a Docker-style token fetched
  from a realm on the same host as the registry (CVE-2025-51471);
* error bodies are shortened and stripped of control characters before they become
  part of a message.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from server.registry import credentials as creds_mod
from server.registry.errors import NOT_FOUND, RegistryError
from toolchain import __version__
from toolchain.names import Name

__all__ = ["Remote", "read_limited"]

USER_AGENT = f"corral/{__version__}"
MAX_REDIRECTS = 5
#: Error and token bodies from a remote registry are read up to this many bytes.
MAX_ERROR_BODY_BYTES = 64 * 1024
_AUTH_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


def _printable(text: str, limit: int = 300) -> str:
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:limit] + ("..." if len(text) > limit else "")


async def read_limited(response: httpx.Response, limit: int) -> bytes | None:
    """Read at most `limit` bytes of a raw body; None if it is longer."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RegistryError(f"registry answered with an unsupported content encoding {_printable(encoding, 40)!r}")
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    out = bytearray()
    async for chunk in response.aiter_raw():
        out += chunk
        if len(out) > limit:
            return None
    return bytes(out)


def error_text(status: int, body: bytes) -> str:
    """``<status>: <message>``; a Docker-style ``{"errors": [...]}`` body gives its message."""
    text = body.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            errors = obj.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                text = str(errors[0].get("message") or errors[0].get("code") or text)
            elif isinstance(obj.get("error"), str):
                text = obj["error"]
    except ValueError:
        pass
    return f"{status}: {_printable(text)}" if text.strip() else str(status)


class Remote:
    """One repository (``namespace/model``) on one registry, reached over HTTPS or, if insecure, HTTP."""

    def __init__(
        self,
        name: Name,
        *,
        insecure: bool = False,
        credentials: creds_mod.Credentials | None = None,
        timeout: float = 60.0,
    ) -> None:
        if name.scheme == "http" and not insecure:
            raise RegistryError("insecure protocol http", 400)
        scheme = "http" if insecure else "https"
        self.name = name
        self.base = f"{scheme}://{name.host}"
        self.repo = f"/v2/{name.namespace}/{name.model}"
        self.credentials = credentials
        self.authorization = credentials.authorization() if credentials else None
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=15.0),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "Remote":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def url(self, path: str) -> str:
        """An absolute URL for a path or a Location header; refuses other origins."""
        url = urljoin(self.base + "/", path)
        if not self.same_origin(url):
            raise RegistryError(f"registry redirected to another host: {_printable(url, 120)}")
        return url

    def same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.base)
        return (a.scheme, a.netloc.casefold()) == (b.scheme, b.netloc.casefold())

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, content: Any = None,
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request (auth, same-origin redirects) and yield the open response.

        Transport errors propagate as httpx.TransportError so callers can retry;
        a body given as an async iterable cannot be replayed, so it is never sent twice
        (the caller retries).
        """
        url = self.url(path)
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        replayable = content is None or isinstance(content, (bytes, str))
        authorized_once = False
        for _ in range(MAX_REDIRECTS + 2):
            hdrs = dict(headers or {})
            if self.authorization:
                hdrs["Authorization"] = self.authorization
            request = self._http.build_request(method, url, headers=hdrs, content=content)
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code == 401 and not authorized_once and replayable:
                    authorized_once = True
                    challenge = response.headers.get("www-authenticate", "")
                    await response.aclose()
                    if await self._answer_challenge(challenge):
                        continue
                    raise RegistryError("unauthorized: access denied", 401)
                if response.status_code == 401:
                    raise RegistryError("unauthorized: access denied", 401)
                if response.status_code in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                    location = response.headers.get("location", "")
                    await response.aclose()
                    url = self.url(location)
                    continue
                yield response
                return
            finally:
                await response.aclose()
        raise RegistryError("registry answered with too many redirects")

    async def _answer_challenge(self, challenge: str) -> bool:
        scheme, _, rest = challenge.strip().partition(" ")
        c = self.credentials
        if scheme.lower() == "basic":
            if c and c.username:
                self.authorization = creds_mod.basic(c.username, c.password)
                return True
            return False
        if scheme.lower() != "bearer":
            return False
        params = dict(_AUTH_PARAM_RE.findall(rest))
        realm = params.get("realm", "")
        if not realm:  # a plain Bearer challenge (a Corral server with keys): no token service to ask
            return False
        realm_host = urlsplit(realm).netloc.casefold()
        if realm_host != urlsplit(self.base).netloc.casefold():
            raise RegistryError(
                f"realm host {_printable(realm_host, 120)!r} does not match original host "
                f"{urlsplit(self.base).netloc!r}", 401,
            )
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {}
        if c and c.username:
            headers["Authorization"] = creds_mod.basic(c.username, c.password)
        elif c and c.token:
            headers["Authorization"] = f"Bearer {c.token}"
        async with self._http.stream("GET", url, headers=headers) as response:
            body = await read_limited(response, MAX_ERROR_BODY_BYTES)
            if response.status_code != 200 or body is None:
                return False
        try:
            obj = json.loads(body)
            token = obj.get("token") or obj.get("access_token")
        except (ValueError, AttributeError):
            return False
        if not isinstance(token, str) or not token:
            return False
        self.authorization = f"Bearer {token}"
        return True

    async def fail(self, response: httpx.Response) -> RegistryError:
        """The error for an unexpected answer: 404 is Ollama's `file does not exist`."""
        if response.status_code == 404:
            return RegistryError(NOT_FOUND, 404)
        try:
            body = await read_limited(response, MAX_ERROR_BODY_BYTES)
        except (RegistryError, httpx.TransportError):
            body = b""
        return RegistryError(error_text(response.status_code, body or b""), 502)
