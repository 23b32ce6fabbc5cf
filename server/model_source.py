"""Where inference meets the rest of the server: the store, options, templates and runners.

Everything the inference engine asks of other modules goes through the functions here, so the
engine (server.inference) and the scheduler stay independent of how models are stored,
prompts rendered and runners started.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from server import errors
from server.inference import Engine, ResolvedModel
from server.inference_types import TextJob
from server.scheduler import Scheduler, settings_from_config, settings_from_env
from server.streaming import RequestError
from toolchain import options as option_table
from toolchain.names import parse_name

# Media types of manifest layers (Ollama's).
_MODEL = "application/vnd.ollama.image.model"
_ADAPTER = "application/vnd.ollama.image.adapter"
_PROJECTOR = "application/vnd.ollama.image.projector"
_TEMPLATE = "application/vnd.ollama.image.template"
_PROMPT = "application/vnd.ollama.image.prompt"
_SYSTEM = "application/vnd.ollama.image.system"
_PARAMS = "application/vnd.ollama.image.params"
_MESSAGES = "application/vnd.ollama.image.messages"


def make_engine(state: Any) -> Engine:
    """The engine of an app: the store in `state.store`, settings from the environment."""
    config = getattr(state, "config", None)
    settings = settings_from_config(config) if config is not None else settings_from_env()
    return Engine(Scheduler(settings, start_runner), state.store)


# -- the store -------------------------------------------------------------------------------


def resolve(store: Any, name: str, *, not_found: str) -> ResolvedModel:
    """The stored model `name` refers to; 404 with `not_found` (formatted with the name as sent)."""
    parsed = parse_name(name)
    if not parsed.is_valid():
        raise RequestError("invalid model name", 400)
    try:
        manifest = store.read_manifest(parsed)
    except errors.ModelNotFound:
        raise RequestError(not_found.format(name=name), 404) from None
    except errors.InvalidName:
        raise RequestError("invalid model name", 400) from None
    model_path = ""
    size = 0
    template = system = None
    params: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    adapters: list[str] = []
    projectors: list[str] = []
    model_digest = ""
    for layer in manifest.layers:
        media = layer.media_type
        if media == _MODEL:
            model_path = str(store.blob_path(layer.digest))
            model_digest = layer.digest
            size = layer.size
        elif media == _ADAPTER:
            adapters.append(str(store.blob_path(layer.digest)))
        elif media == _PROJECTOR:
            projectors.append(str(store.blob_path(layer.digest)))
        elif media in (_TEMPLATE, _PROMPT):
            template = store.read_blob(layer.digest).decode("utf-8")
        elif media == _SYSTEM:
            system = store.read_blob(layer.digest).decode("utf-8")
        elif media == _PARAMS:
            params = json.loads(store.read_blob(layer.digest) or b"{}")
        elif media == _MESSAGES:
            messages = json.loads(store.read_blob(layer.digest) or b"[]")
    if not model_path:
        raise RequestError(f"model '{name}' has no model layer", 500)
    config: dict[str, Any] = {}
    if manifest.config.digest:
        try:
            config = json.loads(store.read_blob(manifest.config.digest))
        except (ValueError, OSError, errors.ServerError):
            config = {}
    details = {
        "parent_model": "",
        "format": config.get("model_format") or "gguf",
        "family": config.get("model_family") or "",
        "families": config.get("model_families"),
        "parameter_size": config.get("model_type") or "",
        "quantization_level": config.get("file_type") or "",
    }
    gguf = store.gguf(model_digest)
    return ResolvedModel(
        name=name, short=parsed.display_shortest(), full=str(parsed.without_digest()), digest=manifest.digest,
        model_path=model_path, size=size, template=template, system=system,
        params=params if isinstance(params, dict) else {}, messages=messages if isinstance(messages, list) else [],
        adapters=adapters, details=details, projectors=projectors, gguf=gguf,
    )


def kv_bytes_per_token(gguf: Any) -> int:
    """Bytes of f16 K and V cache one token of context takes (for the memory estimate)."""
    def num(key: str, default: int = 0) -> int:
        value = gguf.get(key, default)
        if isinstance(value, list):
            value = max(value) if value else default
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    layers = num("block_count")
    embd = num("embedding_length")
    heads = num("attention.head_count", 1) or 1
    heads_kv = num("attention.head_count_kv", heads) or heads
    k = num("attention.key_length", embd // heads)
    v = num("attention.value_length", embd // heads)
    return layers * heads_kv * (k + v) * 2


def memory_estimate(model: ResolvedModel, spec: Any) -> int:
    """The model file plus the KV cache of every slot (what /api/ps reports as size)."""
    per_token = kv_bytes_per_token(model.gguf) if model.gguf is not None else 0
    return model.size + per_token * spec.num_ctx * spec.num_parallel


# -- options --------------------------------------------------------------------------------


def merge_options(params: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """Modelfile PARAMETERs (defaults) overridden by the request's options; wrong types → 400."""
    try:
        checked = option_table.validate_options(request)
    except option_table.OptionError as exc:
        raise RequestError(exc.message, 400) from None
    merged = {k: v for k, v in params.items() if k in option_table.OPTIONS}
    merged.update(checked.values)
    return merged


# -- capabilities ------------------------------------------------------------------------------


def is_embedding_model(model: ResolvedModel) -> bool:
    """Ollama's rule: a model whose GGUF declares a pooling type embeds rather than generates."""
    return model.gguf is not None and model.gguf.get("pooling_type") is not None


def chat_template(model: ResolvedModel) -> Optional[str]:
    if model.gguf is None:
        return None
    value = model.gguf.kv.get("tokenizer.chat_template")
    return value if isinstance(value, str) and value else None


def capabilities(model: ResolvedModel) -> set[str]:
    """completion/embedding, tools, insert, vision, thinking (Ollama's Model.Capabilities)."""
    caps = {"embedding"} if is_embedding_model(model) else {"completion"}
    if model.template is not None:
        if ".Tools" in model.template:
            caps.add("tools")
        if ".Suffix" in model.template:
            caps.add("insert")
        if ".Thinking" in model.template:
            caps.add("thinking")
    else:
        jinja = chat_template(model) or ""
        if "tools" in jinja:
            caps.add("tools")
    if model.projectors or (model.gguf is not None and model.gguf.get("vision.block_count") is not None):
        caps.add("vision")
    return caps


# -- runners -----------------------------------------------------------------------------------


def load_spec(model: ResolvedModel, *, num_ctx: int, num_parallel: int, num_batch: Optional[int],
              num_thread: Optional[int], use_mmap: Optional[bool], embedding: bool) -> Any:
    from server.runner.types import LoadSpec, LoraAdapter

    return LoadSpec(
        model_path=model.model_path,
        num_ctx=num_ctx,
        num_parallel=1 if embedding else num_parallel,
        num_threads=num_thread or os.cpu_count() or 1,
        num_batch=num_batch or 512,
        embedding=embedding,
        adapters=tuple(LoraAdapter(path) for path in model.adapters),
        use_mmap=True if use_mmap is None else use_mmap,
        name=model.short,
    )


async def start_runner(spec: Any, load_timeout: Optional[float]) -> Any:
    from server.runner.client import Runner

    return await Runner.start(spec, load_timeout=1e9 if load_timeout is None else load_timeout)


def completion_request(prompt: Any, options: dict[str, Any], fmt: Any, info: Any = None) -> Any:
    """The runner's request. A text prompt gets the model's BOS (as llama-server adds it) unless
    the rendered text already starts with it (templates that write `bos_token` themselves)."""
    from server.runner.types import CompletionRequest, SamplingOptions

    bos_text = getattr(info, "bos_text", "") if info is not None else ""
    add_special = not (isinstance(prompt, str) and bos_text and prompt.startswith(bos_text))
    try:
        sampling = SamplingOptions.from_options(options)
    except CLIENT_ERRORS as exc:
        raise RequestError(str(exc), 400) from None
    return CompletionRequest(prompt=prompt, options=sampling, format=fmt, add_special=add_special)


def _runner_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    from server.runner import errors as runner_errors

    failures = (runner_errors.RunnerCrashed, runner_errors.RunnerClosed)
    client = (runner_errors.InvalidRequest,)
    return failures, client


RUNNER_FAILURES, CLIENT_ERRORS = _runner_errors()


# -- prompts -----------------------------------------------------------------------------------


async def render(job: TextJob, model: ResolvedModel, runner: Any, num_ctx: int) -> Any:
    """The prompt to complete: text (special tokens parsed, no BOS added) or token ids."""
    if job.kind == "generate" and job.raw:
        return job.prompt
    raise RequestError("templated prompts are not available yet", 501)


def parse_tool_calls(text: str, tools: list[dict[str, Any]], model: ResolvedModel) -> tuple[str, list[dict[str, Any]]]:
    return text, []
