"""The stack file's schema: pydantic models of `stack.yaml` (pure; no I/O).

A stack declares the target servers, the models each server must hold, whether models
the stack does not name are pruned, the runtime settings `stack serve` starts with, and
the web UI / proxy section the renderers use. Unknown keys are errors (`extra="forbid"`),
so a typo never silently does nothing; `toolchain.stack.load` turns pydantic's errors
into `file:line key: message` lines. `stack schema` prints `json_schema()`.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolchain.render.model import ProxyConfig, WebUIConfig

from toolchain.stacktest.spec import TestCase

DEFAULT_TARGET_URL = "http://127.0.0.1:11434"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _keep_alive(value: Any) -> Any:
    """A keep-alive as Ollama takes it: a Go duration (`5m`, `1h30m`, `-1`) or seconds."""
    from toolchain.duration import DurationError, parse_keep_alive

    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return value
    try:
        parse_keep_alive(value)
    except DurationError as exc:
        raise ValueError(f"not a keep-alive duration ({exc}); write e.g. 5m, 1h, 30s or -1") from None
    return value


class Target(_Strict):
    """One server the stack is applied to (an Ollama or a `stack serve`)."""

    url: str = Field(DEFAULT_TARGET_URL, description="Base URL of the server's Ollama API.")
    token: Optional[str] = Field(
        None, description="Bearer token sent to the server; write it as ${ENV_VAR}, never inline."
    )


def _env_value(value: Any) -> str:
    """A setting as its environment variable spells it (booleans as Ollama's 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class Runtime(_Strict):
    """Settings `stack serve -f stack.yaml` starts with (environment variables still win)."""

    num_parallel: Optional[int] = Field(None, ge=1, description="Parallel requests per loaded model (OLLAMA_NUM_PARALLEL).")
    max_loaded_models: Optional[int] = Field(None, ge=1, description="Models kept in memory at once (OLLAMA_MAX_LOADED_MODELS).")
    keep_alive: Optional[Union[str, int]] = Field(None, description="Default keep-alive, e.g. 5m, 1h, -1 (OLLAMA_KEEP_ALIVE).")
    max_queue: Optional[int] = Field(None, ge=1, description="Requests waiting before the server answers 503 (OLLAMA_MAX_QUEUE).")
    context_length: Optional[int] = Field(None, ge=1, description="Default context length (OLLAMA_CONTEXT_LENGTH).")
    flash_attention: Optional[bool] = Field(
        None, description="Flash attention on or off (OLLAMA_FLASH_ATTENTION); unset leaves llama.cpp's choice."
    )

    _check_keep_alive = field_validator("keep_alive", mode="before")(_keep_alive)

    def environment(self) -> dict[str, str]:
        """The OLLAMA_* variables these settings stand for (only the ones set)."""
        names = {
            "num_parallel": "OLLAMA_NUM_PARALLEL",
            "max_loaded_models": "OLLAMA_MAX_LOADED_MODELS",
            "keep_alive": "OLLAMA_KEEP_ALIVE",
            "max_queue": "OLLAMA_MAX_QUEUE",
            "context_length": "OLLAMA_CONTEXT_LENGTH",
            "flash_attention": "OLLAMA_FLASH_ATTENTION",
        }
        return {env: _env_value(getattr(self, key)) for key, env in names.items() if getattr(self, key) is not None}


class Model(_Strict):
    """One model the servers must hold: built from a Modelfile and/or a base, or pulled."""

    modelfile: Optional[str] = Field(
        None, description="Path of a Modelfile, relative to the stack file; must stay inside the repository."
    )
    from_: Optional[str] = Field(
        None,
        alias="from",
        description=(
            "Base of the model: a local GGUF file (a path: ./x.gguf, ../x, /abs, ~/x; relative to the stack file) "
            "or a model name. Replaces the Modelfile's FROM line when both are given."
        ),
    )
    pull: Optional[str] = Field(
        None,
        description="Pull the model from a registry: its reference, optionally pinned as name@sha256:<manifest digest>.",
    )
    insecure: bool = Field(False, description="Pull over plain HTTP (a registry without TLS).")
    keep_alive: Optional[Union[str, int]] = Field(None, description="Keep-alive used when the model is preloaded.")
    preload: bool = Field(False, description="Load the model into memory after apply (an empty generate request).")
    tests: list[TestCase] = Field(default_factory=list, description="Prompt regression tests (`stack test`).")

    _check_keep_alive = field_validator("keep_alive", mode="before")(_keep_alive)

    @model_validator(mode="after")
    def _one_source(self) -> "Model":
        if self.pull is not None and (self.modelfile is not None or self.from_ is not None):
            raise ValueError("a model is either pulled (pull) or built (modelfile / from), not both")
        if self.pull is None and self.modelfile is None and self.from_ is None:
            raise ValueError("a model needs one of: modelfile, from, pull")
        return self


class Stack(_Strict):
    """A `stack.yaml` file."""

    version: Literal[1] = Field(1, description="Stack file format version.")
    targets: dict[str, Target] = Field(
        default_factory=dict,
        description="Servers to manage, by name. Empty: one target named 'default' at OLLAMA_HOST.",
    )
    prune: bool = Field(False, description="Delete models present on a server but not named in the stack.")
    runtime: Runtime = Field(default_factory=Runtime)
    models: dict[str, Model] = Field(default_factory=dict, description="Models by name (case-insensitive).")
    proxy: Optional[ProxyConfig] = Field(None, description="nginx in front of the targets (`stack render`).")
    webui: Optional[WebUIConfig] = Field(None, description="Open WebUI beside the servers (`stack render`).")
    tests: list[str] = Field(
        default_factory=list,
        description="Test files (paths or globs relative to the stack file, e.g. tests/*.yaml), each mapping model names to tests.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section with every entry commented out (`models:` alone) reads as empty."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in ("targets", "runtime", "models", "webui", "proxy"))}
            return {k: v for k, v in data.items() if not (v is None and k in ("targets", "runtime", "models", "webui", "proxy", "tests"))}
        return data


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a stack file, for editors (`# yaml-language-server: $schema=...`)."""
    schema = Stack.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Corral stack file"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
