"""Credentials for remote registries, read from the environment or a file; never logged.

Sources, first match wins:

* ``CORRAL_REGISTRY_AUTH``: a JSON object, keyed by registry host (``host`` or
  ``host:port``, compared case-insensitively), whose values are either
  ``{"token": "..."}`` (sent as ``Authorization: Bearer``) or
  ``{"username": "...", "password": "..."}`` (sent as HTTP Basic, or to a Docker-style
  token endpoint when the registry asks for one).
* the file named by ``CORRAL_REGISTRY_AUTH_FILE`` (default
  ``~/.config/corral/registry-auth.json``) with the same content.

Credentials are only ever sent to the host they are keyed under (a token realm on
another host is refused, CVE-2025-51471). `Credentials` hides its secrets from
``repr`` and ``str`` so they cannot end up in a log line or a traceback.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

__all__ = ["Credentials", "CredentialsError", "lookup", "DEFAULT_FILE"]

DEFAULT_FILE = "~/.config/corral/registry-auth.json"
_MAX_FILE_BYTES = 1024 * 1024


class CredentialsError(ValueError):
    """The credentials source exists but cannot be used (the message never holds a secret)."""


@dataclass(frozen=True)
class Credentials:
    host: str
    token: str = field(default="", repr=False)
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"credentials for {self.host}"

    def authorization(self) -> str | None:
        """The header value sent before any challenge, if any."""
        if self.token:
            return f"Bearer {self.token}"
        if self.username:
            return basic(self.username, self.password)
        return None


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _parse(text: str, origin: str) -> dict[str, Credentials]:
    try:
        obj = json.loads(text)
    except ValueError:
        raise CredentialsError(f"{origin} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise CredentialsError(f"{origin} must be a JSON object keyed by registry host")
    out: dict[str, Credentials] = {}
    for host, entry in obj.items():
        if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
            raise CredentialsError(f"{origin}: the entry for {host!r} must be an object of strings")
        creds = Credentials(
            host=host,
            token=entry.get("token", ""),
            username=entry.get("username", ""),
            password=entry.get("password", ""),
        )
        if not creds.token and not creds.username:
            raise CredentialsError(f"{origin}: the entry for {host!r} needs a token or a username")
        out[host.casefold()] = creds
    return out


def load(environ: Mapping[str, str] | None = None) -> dict[str, Credentials]:
    env = os.environ if environ is None else environ
    inline = env.get("CORRAL_REGISTRY_AUTH", "").strip()
    if inline:
        return _parse(inline, "CORRAL_REGISTRY_AUTH")
    path = Path(env.get("CORRAL_REGISTRY_AUTH_FILE", "").strip() or DEFAULT_FILE).expanduser()
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise CredentialsError(f"{path} is too large")
    try:
        return _parse(data.decode("utf-8"), str(path))
    except UnicodeDecodeError:
        raise CredentialsError(f"{path} is not UTF-8") from None


def lookup(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials for exactly `host` (``host:port`` as written in the model name)."""
    return load(environ).get(host.casefold())
