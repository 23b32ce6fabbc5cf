"""What rendering reads from the machine: token and password variables, the secret key file, TLS files.

`collect` gathers every secret a render needs, or raises `RenderError` naming the first
missing or bad one, before anything is written. The values only ever reach files
written with mode 0600 (`files.SECRET_MODE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from toolchain.errors import CorralError
from toolchain.render.model import RenderInput
from toolchain.render.nginx import valid_token

__all__ = ["RenderError", "Secrets", "collect"]


class RenderError(CorralError):
    """The stack cannot be rendered on this machine (a variable, a file, a foreign output dir)."""


@dataclass(frozen=True)
class Secrets:
    tokens: Mapping[str, str] = field(default_factory=dict)  # client name -> bearer token
    admin_password: Optional[str] = None
    webui_secret_key: Optional[str] = None
    upstream_token: Optional[str] = None  # the replicas' API key nginx sends (proxy.upstream_token_env)


def _env(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name)
    if value is None:
        raise RenderError(f"environment variable {name} ({what}) is not set")
    if not value.strip():
        raise RenderError(f"environment variable {name} ({what}) is empty")
    return value


def collect(inp: RenderInput, environ: Optional[Mapping[str, str]] = None) -> Secrets:
    env = os.environ if environ is None else environ
    tokens: dict[str, str] = {}
    proxy = inp.proxy
    if proxy is not None:
        if proxy.tls is not None:
            for label, path in (("certificate", proxy.tls.cert), ("key", proxy.tls.key)):
                if not Path(path).is_file():
                    raise RenderError(f"TLS {label} {path} does not exist")
        owners: dict[str, str] = {}
        for client in proxy.clients:
            if client.token_env is None:
                continue
            token = _env(env, client.token_env, f"token of proxy client {client.name!r}")
            if not valid_token(token):
                raise RenderError(
                    f"environment variable {client.token_env} (token of proxy client {client.name!r}) is not "
                    "a usable bearer token: use 16 or more characters from A-Z a-z 0-9 . _ ~ + / -"
                )
            if token in owners:
                raise RenderError(f"proxy clients {owners[token]!r} and {client.name!r} have the same token")
            owners[token] = client.name
            tokens[client.name] = token
    upstream_token = None
    if proxy is not None and proxy.upstream_token_env is not None:
        upstream_token = _env(env, proxy.upstream_token_env, "the replicas' API key that nginx sends")
        if not valid_token(upstream_token):
            raise RenderError(
                f"environment variable {proxy.upstream_token_env} (the replicas' API key) is not a usable bearer "
                "token: use 16 or more characters from A-Z a-z 0-9 . _ ~ + / -"
            )
        if upstream_token in owners:
            raise RenderError(
                f"environment variable {proxy.upstream_token_env} (the replicas' API key) holds the token of "
                f"proxy client {owners[upstream_token]!r}"
            )
    admin_password = secret_key = None
    ui = inp.webui
    if ui is not None and ui.enabled:
        admin_password = _env(env, ui.admin_password_env, "Open WebUI admin password")
        if "'" in admin_password or "\n" in admin_password:
            raise RenderError(f"environment variable {ui.admin_password_env} must not contain ' or a newline")
        key_path = Path(ui.secret_key_file)
        if not key_path.is_file():
            raise RenderError(f"Open WebUI secret key file {key_path} does not exist")
        secret_key = key_path.read_text(encoding="utf-8").strip()
        if len(secret_key) < 16 or "'" in secret_key or "\n" in secret_key:
            raise RenderError(
                f"Open WebUI secret key file {key_path} must hold one line of 16+ characters without quotes"
            )
        if ui.client is not None and proxy is not None and ui.client not in tokens:
            client = proxy.client(ui.client)
            raise RenderError(
                f"webui.client {ui.client!r} has no token_env, so Open WebUI would have no token to send"
                if client is not None
                else f"webui.client {ui.client!r} is not a proxy client"
            )
    return Secrets(
        tokens=tokens, admin_password=admin_password, webui_secret_key=secret_key, upstream_token=upstream_token
    )
