"""Every `OLLAMA_*` (and `CORRAL_*`) variable the server reads: name, default and help text in one place.

A setting is one field of `Config` declared with `setting(...)`; `Config.from_env()` reads them all
the way Ollama's `envconfig` does (surrounding spaces and quotes stripped; booleans as Go's
`strconv.ParseBool`, where an unparsable non-empty value counts as true). To add a variable, add one
field here; `stack serve --help` lists them from `describe()`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_PORT = 11434


def clean(raw: str | None) -> str:
    """Ollama's `Var`: trim spaces, then surrounding quotes, then spaces again."""
    return (raw or "").strip().strip("\"'").strip()


def parse_bool(raw: str) -> bool:
    if not raw:
        return False
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return True  # Go's BoolWithDefault: set but unparsable means "on"


def parse_optional_bool(raw: str) -> bool | None:
    """Unset means "let the component decide" (None); otherwise as `parse_bool`."""
    return parse_bool(raw) if raw else None


def parse_str(raw: str) -> str:
    return raw


def parse_models(raw: str) -> Path:
    return Path(raw).expanduser() if raw else Path.home() / ".ollama" / "models"


def parse_host(raw: str) -> str:
    return raw or f"127.0.0.1:{DEFAULT_PORT}"


def parse_uint(default: int) -> Callable[[str], int]:
    """An unsigned integer; empty, unparsable or negative -> `default` (Ollama's `Uint`)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            return default
        return value if value >= 0 else default

    return parse


def parse_keys_file(raw: str) -> Path:
    from toolchain.keys import default_path

    return default_path({"CORRAL_KEYS_FILE": raw})


def parse_names(raw: str) -> tuple[str, ...]:
    """A comma-separated list (spaces around items ignored, empty items dropped)."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_keep_alive_env(raw: str) -> float:
    from toolchain.duration import keep_alive_from_env

    return keep_alive_from_env(raw)


def parse_load_timeout(raw: str) -> float | None:
    """Seconds (a Go duration or whole seconds); default 5m; zero or negative = no limit."""
    from toolchain.duration import DurationError, parse_go_duration

    if not raw:
        return 300.0
    try:
        seconds = float(int(raw))
    except ValueError:
        try:
            seconds = parse_go_duration(raw)
        except DurationError:
            return 300.0
    return seconds if seconds > 0 else None


def parse_bool_default_true(raw: str) -> bool:
    """Like `parse_bool`, but unset means on."""
    return parse_bool(raw) if raw else True


def setting(env: str, parse: Callable[[str], Any], help: str) -> Any:
    """Declare a Config field read from `env` with `parse` (given the cleaned string, "" when unset)."""
    return field(default_factory=lambda: parse(""), metadata={"env": env, "parse": parse, "help": help})


@dataclass(frozen=True)
class Config:
    host: str = setting("OLLAMA_HOST", parse_host, "IP address and port for the server (default 127.0.0.1:11434)")
    models: Path = setting("OLLAMA_MODELS", parse_models, "The path to the models directory (default ~/.ollama/models)")
    noprune: bool = setting("OLLAMA_NOPRUNE", parse_bool, "Do not prune model blobs on startup or after delete")
    origins: str = setting("OLLAMA_ORIGINS", parse_str, "A comma separated list of allowed origins")
    # security (server.auth, server.limits, server.serve)
    keys_file: Path = setting("CORRAL_KEYS_FILE", parse_keys_file,
                              "API keys file written by `stack keys` (default ~/.corral/keys.json)")
    allow_unauthenticated: bool = setting("CORRAL_ALLOW_UNAUTHENTICATED", parse_bool,
                                          "Serve a non-loopback address without API keys (auth done in front)")
    allowed_hosts: tuple[str, ...] = setting("CORRAL_ALLOWED_HOSTS", parse_names,
                                             "Extra Host names a loopback server answers (comma separated)")
    max_body_bytes: int = setting("CORRAL_MAX_BODY_BYTES", parse_uint(32 << 20),
                                  "Largest request body except blob uploads (default 32 MiB; 0 = no limit)")
    max_blob_bytes: int = setting("CORRAL_MAX_BLOB_BYTES", parse_uint(0),
                                  "Largest blob upload (default 0 = no limit)")
    max_connections: int = setting("CORRAL_MAX_CONNECTIONS", parse_uint(1024),
                                   "Concurrent connections and requests before answering 503 (default 1024)")
    idle_timeout: int = setting("CORRAL_IDLE_TIMEOUT", parse_uint(5),
                                "Seconds an idle keep-alive connection is kept open (default 5)")
    header_timeout: int = setting("CORRAL_HEADER_TIMEOUT", parse_uint(10),
                                  "Seconds a client has to send a request's headers, else 408 (default 10; 0 = off)")
    # observability (server.observe)
    metrics_addr: str = setting("CORRAL_METRICS_ADDR", parse_str,
                                "Serve /metrics without a key on this HOST:PORT only (e.g. 127.0.0.1:9464; "
                                "default: on the API port)")
    # inference (server.scheduler)
    keep_alive: float = setting("OLLAMA_KEEP_ALIVE", parse_keep_alive_env,
                                "The duration that models stay loaded in memory (default \"5m\")")
    max_loaded_models: int = setting("OLLAMA_MAX_LOADED_MODELS", parse_uint(0),
                                     "Maximum number of loaded models (default 0 = 3)")
    num_parallel: int = setting("OLLAMA_NUM_PARALLEL", parse_uint(0),
                                "Maximum number of parallel requests per model (default 0 = 4)")
    max_queue: int = setting("OLLAMA_MAX_QUEUE", parse_uint(512), "Maximum number of queued requests (default 512)")
    load_timeout: float | None = setting("OLLAMA_LOAD_TIMEOUT", parse_load_timeout,
                                         "How long to allow model loads to stall before giving up (default \"5m\")")
    context_length: int = setting("OLLAMA_CONTEXT_LENGTH", parse_uint(0),
                                  "Context length to use unless otherwise specified (default 0 = 4096)")
    flash_attention: bool | None = setting("OLLAMA_FLASH_ATTENTION", parse_optional_bool,
                                           "Flash attention: 1 on, 0 off (default: llama.cpp's auto choice)")
    registry_push: bool = setting(
        "CORRAL_REGISTRY_PUSH",
        parse_bool_default_true,
        "Accept pushes to this server's /v2/ registry (default on; 0/false answers 403 to every upload)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Config":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides or "env" not in f.metadata:
                continue
            values[f.name] = f.metadata["parse"](clean(env.get(f.metadata["env"])))
        values.update(overrides)
        return cls(**values)


def describe() -> list[tuple[str, str]]:
    """(variable, help) for every setting, in declaration order."""
    return [(f.metadata["env"], f.metadata["help"]) for f in dataclasses.fields(Config) if "env" in f.metadata]


def bind_address(host: str) -> tuple[str, int]:
    """Where `stack serve` listens for an `OLLAMA_HOST` value (envconfig.Host rules).

    `""` → 127.0.0.1:11434; `:1234` → all interfaces; `[::1]` and `::1` → IPv6 loopback; a scheme
    sets the default port (http 80, https 443); a port outside 0–65535 falls back to the default.
    """
    raw = clean(host)
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "http", raw
    default_port = DEFAULT_PORT if not sep else (443 if scheme == "https" else 80)
    hostport = rest.split("/", 1)[0]
    name, port_text = hostport, ""
    if hostport.startswith("["):
        end = hostport.find("]")
        name, tail = hostport[1:end], hostport[end + 1 :]
        port_text = tail[1:] if tail.startswith(":") else ""
    elif hostport.count(":") == 1:
        name, port_text = hostport.split(":")
    elif hostport.count(":") > 1:  # bare IPv6 without brackets
        name = hostport
    port = default_port
    if port_text:
        try:
            value = int(port_text)
            port = value if 0 <= value <= 65535 else default_port
        except ValueError:
            port = default_port
    if name == "" and not port_text and not hostport:
        name = "127.0.0.1"
    elif name == "":
        name = "0.0.0.0"
    return name, port
