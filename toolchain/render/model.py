"""The values the renderers read: the stack's `proxy` and `webui` sections and the replicas.

`ProxyConfig` and `WebUIConfig` are the two stack-file sections (the stack schema embeds
each as one optional field). `RenderInput` gathers what every renderer needs: the
replicas (``host:port`` of each `stack serve`), the declared model names, both sections
and where things live on a host. All checks that need no disk and no environment are
made here, so a bad stack fails at load time with a message naming the field; the
checks that do (token variables, TLS files, the secret key file) live in
`toolchain.render.secrets`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal, Optional
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "BodyLimits",
    "Client",
    "Preset",
    "ProxyConfig",
    "RateLimit",
    "RenderInput",
    "TLSConfig",
    "Timeouts",
    "WebUIConfig",
    "model_key",
    "split_hostport",
]

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_CLIENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")
_SERVER_NAME_RE = re.compile(r"^(_|\*?[A-Za-z0-9.-]+)$")
_PRESET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


def split_hostport(value: str) -> tuple[str, int]:
    """``host:port`` → (host, port); host is an IPv4, ``[IPv6]`` or DNS name; raises ValueError."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r} is not a valid host:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r} is not a valid host:port (bad IPv6 address)") from None
        host = f"[{host}]"
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not a valid host:port")
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"{value!r} is not a valid host:port (bad host {host!r})")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{value!r} is not a valid host:port (bad IPv4 address)") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not a valid host:port (port must be 1-65535)")
    return host, int(port_text)


def _listen(value: str) -> str:
    """A listen address: ``host:port`` or a bare port (all interfaces)."""
    if value.isdigit():
        value = f"0.0.0.0:{value}"
    host, port = split_hostport(value)
    return f"{host}:{port}"


def model_key(name: str) -> tuple[str, ...]:
    """A declared model name's identity (defaults filled, case folded), for membership checks."""
    from toolchain.names import parse_name

    return parse_name(name).casefold_key()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Client(_Section):
    """One caller of the team server: a name (logged), a scope and where its token comes from."""

    name: str
    scope: Literal["user", "admin"] = "user"
    token_env: Optional[str] = Field(
        default=None, description="Environment variable holding the bearer token at render time."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _CLIENT_NAME_RE.match(v):
            raise ValueError(f"client name {v!r} must match [a-z0-9][a-z0-9_-]* (at most 63 characters)")
        return v

    @field_validator("token_env")
    @classmethod
    def _env(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _ENV_NAME_RE.match(v):
            raise ValueError(f"token_env {v!r} is not an environment variable name")
        return v


class TLSConfig(_Section):
    cert: str = Field(description="Path of the certificate chain (PEM) on the proxy host.")
    key: str = Field(description="Path of the private key (PEM) on the proxy host.")
    redirect_listen: Optional[str] = Field(
        default=None, description="Plain-HTTP listen address that redirects to HTTPS (e.g. '80')."
    )
    hsts_max_age: int = Field(default=31536000, ge=0)

    @field_validator("cert", "key")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"TLS path {v!r} must be absolute")
        if any(c in v for c in ' ;"\'{}$\\\n'):
            raise ValueError(f"TLS path {v!r} contains a character nginx cannot take unquoted")
        return v

    @field_validator("redirect_listen")
    @classmethod
    def _redirect(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _listen(v)


class RateLimit(_Section):
    """Per client name: a request rate with a burst, and a cap on concurrent streams."""

    requests_per_second: int = Field(default=10, ge=1)
    burst: int = Field(default=20, ge=0)
    streams: int = Field(default=4, ge=1, description="Concurrent generate/chat/OpenAI requests per client.")


class BodyLimits(_Section):
    """nginx sizes (``10m``, ``512k``, ``0`` = unlimited)."""

    user: str = Field(default="10m", description="Inference, read and management JSON routes.")
    upload: str = Field(default="0", description="Blob uploads (/api/blobs/) and registry writes (/v2/).")

    @field_validator("user", "upload")
    @classmethod
    def _size(cls, v: str) -> str:
        if not _SIZE_RE.match(v):
            raise ValueError(f"body limit {v!r} must be a number with an optional k, m or g suffix")
        return v


class Timeouts(_Section):
    """Seconds. Read/send are long so a slow model's answer is not cut (default 10 minutes)."""

    connect: int = Field(default=5, ge=1)
    read: int = Field(default=600, ge=1)
    send: int = Field(default=600, ge=1)


class ProxyConfig(_Section):
    """The stack's `proxy` section: nginx in front of the replicas."""

    listen: str = "127.0.0.1:8080"
    server_name: str = "_"
    tls: Optional[TLSConfig] = None
    clients: list[Client] = Field(min_length=1)
    tokens_file: Optional[str] = Field(
        default=None,
        description="Path of a token map include the operator provides; when set, no token is read "
        "from the environment and clients need no token_env.",
    )
    rate_limit: RateLimit = RateLimit()
    body_limits: BodyLimits = BodyLimits()
    timeouts: Timeouts = Timeouts()
    max_fails: int = Field(default=2, ge=0)
    fail_timeout: int = Field(default=10, ge=1)
    access_log: str = Field(
        default="var/access.log",
        description="Access log path (relative = under the nginx prefix); lines name the client, never the token.",
    )
    upstream_host: str = Field(
        default="localhost",
        description="Host header sent to the replicas (Ollama accepts 'localhost' on a loopback bind).",
    )
    upstream_token_env: Optional[str] = Field(
        default=None,
        description="Environment variable holding an admin API key of the replicas (`stack keys add`); "
        "nginx sends it upstream in place of the client's token, so replicas on a network can require keys.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _listen(v)

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str) -> str:
        if not _SERVER_NAME_RE.match(v):
            raise ValueError(f"server_name {v!r} is not a host name")
        return v

    @field_validator("upstream_host")
    @classmethod
    def _upstream_host(cls, v: str) -> str:
        host = v.rsplit(":", 1)[0] if v.count(":") == 1 else v
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"upstream_host {v!r} is not a host name")
        return v

    @field_validator("upstream_token_env")
    @classmethod
    def _upstream_env(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _ENV_NAME_RE.match(v):
            raise ValueError(f"upstream_token_env {v!r} is not an environment variable name")
        return v

    @field_validator("access_log")
    @classmethod
    def _access_log(cls, v: str) -> str:
        if not v or any(c in v for c in ' ;"\'{}$\\\n'):
            raise ValueError(f"access_log {v!r} is not a usable path")
        return v

    @field_validator("tokens_file")
    @classmethod
    def _tokens_file(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or any(c in v for c in ' ;"\'{}$\\\n')):
            raise ValueError(f"tokens_file {v!r} is not a usable path")
        return v

    @model_validator(mode="after")
    def _clients(self) -> "ProxyConfig":
        seen: set[str] = set()
        for client in self.clients:
            if client.name in seen:
                raise ValueError(f"two proxy clients are named {client.name!r}")
            seen.add(client.name)
            if self.tokens_file is None and client.token_env is None:
                raise ValueError(f"proxy client {client.name!r} needs token_env (or set proxy.tokens_file)")
        envs = [c.token_env for c in self.clients if c.token_env]
        if self.upstream_token_env is not None and self.upstream_token_env in envs:
            raise ValueError(
                f"upstream_token_env {self.upstream_token_env} is also a client's token_env: the replicas' key "
                "must not be a client's token"
            )
        for env in envs:
            if envs.count(env) > 1:
                raise ValueError(f"two proxy clients share the token variable {env} (the same token)")
        return self

    def client(self, name: str) -> Optional[Client]:
        return next((c for c in self.clients if c.name == name), None)


class Preset(_Section):
    """An Open WebUI model preset over a declared model."""

    id: str
    model: str = Field(description="The declared model the preset runs on.")
    name: str
    description: str = ""
    system: Optional[str] = None
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    hidden: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _PRESET_ID_RE.match(v):
            raise ValueError(f"preset id {v!r} must be one word (letters, digits, . _ : / -)")
        return v


class WebUIConfig(_Section):
    """The stack's `webui` section: Open WebUI beside the server."""

    enabled: bool = True
    image_tag: str = "v0.12.4"
    public_url: str = Field(description="URL users open, e.g. https://chat.example.org")
    listen: str = Field(default="127.0.0.1:3000", description="Where Open WebUI itself listens on its host.")
    ollama_url: Optional[str] = Field(
        default=None, description="URL Open WebUI uses for the model server (default: derived from the proxy)."
    )
    client: Optional[str] = Field(default=None, description="Proxy client whose token Open WebUI sends.")
    admin_email: str
    admin_name: str = "Admin"
    admin_password_env: str
    admin_key_env: Optional[str] = Field(
        default=None,
        description="Environment variable holding an Open WebUI API key of an admin account; when set, "
        "`stack plan` compares and `stack apply` syncs the presets with the UI at public_url.",
    )
    secret_key_file: str = Field(description="File holding a stable WEBUI_SECRET_KEY (read at render time).")
    task_model: Optional[str] = Field(default=None, description="Small declared model for titles and tags.")
    default_models: list[str] = Field(default_factory=list)
    hidden_models: list[str] = Field(default_factory=list)
    presets: list[Preset] = Field(default_factory=list)

    @field_validator("public_url", "ollama_url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _listen(v)

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", v) or v in ("main", "latest"):
            raise ValueError(f"image_tag {v!r} must be a pinned tag (not main/latest)")
        return v

    @field_validator("admin_password_env", "admin_key_env")
    @classmethod
    def _env(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is not None and not _ENV_NAME_RE.match(v):
            raise ValueError(f"{info.field_name} {v!r} is not an environment variable name")
        return v

    @field_validator("admin_email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", v):
            raise ValueError(f"admin_email {v!r} is not an email address")
        return v

    @field_validator("secret_key_file")
    @classmethod
    def _secret_file(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"secret_key_file {v!r} must be absolute")
        return v

    @model_validator(mode="after")
    def _unique_presets(self) -> "WebUIConfig":
        ids = [p.id for p in self.presets]
        for pid in ids:
            if ids.count(pid) > 1:
                raise ValueError(f"two presets have the id {pid!r}")
        return self

    @property
    def public_host(self) -> str:
        return urlsplit(self.public_url).hostname or ""


class RenderInput(_Section):
    """Everything a renderer reads. Pure data; same input → byte-identical files."""

    replicas: list[str] = Field(min_length=1, description="host:port of each `stack serve` replica.")
    models: list[str] = Field(default_factory=list, description="Model names the stack declares.")
    proxy: Optional[ProxyConfig] = None
    webui: Optional[WebUIConfig] = None
    store: str = Field(default="/var/lib/corral/models", description="Model store path on a server host.")
    install_dir: str = Field(default="/etc/corral", description="Where the rendered files are installed on a host.")
    stack_bin: str = Field(default="/usr/local/bin/stack", description="The `stack` executable on a server host.")
    webui_bin: str = Field(default="/usr/local/bin/open-webui", description="The `open-webui` executable.")
    corral_image: str = Field(default="corral:0.1.0", description="Container image of `stack serve` (compose).")
    nginx_image: str = "nginx:1.22.1"

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for item in v:
            try:
                host, port = split_hostport(item)
            except ValueError as exc:
                raise ValueError(f"replica {exc}") from None
            norm = f"{host.lower()}:{port}"
            if norm in out:
                raise ValueError(f"replica {item!r} is listed twice")
            out.append(norm)
        return out

    @field_validator("store", "install_dir", "stack_bin", "webui_bin")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/") or any(c in v for c in " \n\"'"):
            raise ValueError(f"{v!r} must be an absolute path without spaces or quotes")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "RenderInput":
        declared = {model_key(m) for m in self.models}
        ui = self.webui
        if ui is None:
            return self
        preset_ids = {p.id for p in ui.presets}
        for preset in ui.presets:
            if model_key(preset.model) not in declared:
                raise ValueError(
                    f"preset {preset.id!r} is for model {preset.model!r}, which the stack does not declare"
                )
        for name in ui.default_models:
            if name not in preset_ids and model_key(name) not in declared:
                raise ValueError(f"default model {name!r} is neither a declared model nor a preset")
        if ui.task_model is not None and model_key(ui.task_model) not in declared:
            raise ValueError(f"task model {ui.task_model!r} is not declared by the stack")
        for name in ui.hidden_models:
            if model_key(name) not in declared:
                raise ValueError(f"hidden model {name!r} is not declared by the stack")
        if self.proxy is not None and ui.client is not None:
            if self.proxy.client(ui.client) is None:
                raise ValueError(f"webui.client {ui.client!r} is not a proxy client")
        if self.proxy is not None and self.proxy.tokens_file is None and ui.client is None:
            raise ValueError("webui.client must name the proxy client whose token Open WebUI sends")
        if self.proxy is not None and self.proxy.tls is not None and self.proxy.server_name == "_" and not ui.ollama_url:
            raise ValueError("with TLS and server_name '_', set webui.ollama_url (the URL Open WebUI uses for the proxy)")
        if self.proxy is not None and ui.public_host and self.proxy.server_name == ui.public_host:
            raise ValueError("webui.public_url must use a different host name than proxy.server_name")
        return self
