"""Where inference meets the rest of the server: the store, options, templates and runners.

Everything the inference engine asks of other modules goes through the functions here, so the
engine (server.inference) and the scheduler stay independent of how models are stored,
prompts rendered and runners started.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Optional

from server import errors
from server.inference import Engine, ResolvedModel
from server.inference_types import TextJob
from server.scheduler import Scheduler, settings_from_config, settings_from_env
from server.store_model import load_model
from server.streaming import RequestError
from toolchain import options as option_table
from toolchain.names import parse_name


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
        model = load_model(store, parsed)
    except errors.ModelNotFound:
        raise RequestError(not_found.format(name=name), 404) from None
    except errors.InvalidName:
        raise RequestError("invalid model name", 400) from None
    if model.model_path is None:
        raise RequestError(f"model '{name}' has no model layer", 400)
    gguf = model.gguf(store)
    return ResolvedModel(
        name=name, short=model.short_name, full=str(model.name.without_digest()), digest=model.digest,
        model_path=str(model.model_path), size=store.blob_size(model.model_digest), template=model.template,
        system=model.system or None, params=dict(model.params), messages=list(model.messages),
        adapters=[str(p) for p in model.adapter_paths], details=model.details(),
        projectors=[str(p) for p in model.projector_paths], gguf=gguf,
        capabilities=frozenset(model.capabilities(store)),
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
    return "embedding" in model.capabilities


def chat_template(model: ResolvedModel) -> Optional[str]:
    if model.gguf is None:
        return None
    value = model.gguf.kv.get("tokenizer.chat_template")
    return value if isinstance(value, str) and value else None


def capabilities(model: ResolvedModel) -> frozenset[str]:
    """completion/embedding, tools, insert, vision, thinking (the store's Model.capabilities)."""
    return model.capabilities


# -- runners -----------------------------------------------------------------------------------


def load_spec(model: ResolvedModel, *, num_ctx: int, num_parallel: int, num_batch: Optional[int],
              num_thread: Optional[int], use_mmap: Optional[bool], embedding: bool,
              flash_attention: Optional[bool] = None) -> Any:
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
        flash_attention=flash_attention,
        name=model.short,
    )


async def start_runner(spec: Any, load_timeout: Optional[float]) -> Any:
    from server.runner.client import Runner

    return await Runner.start(spec, load_timeout=1e9 if load_timeout is None else load_timeout)


def completion_request(prompt: Any, options: dict[str, Any], fmt: Any, info: Any = None, *,
                       logprobs: bool = False, top_logprobs: int = 0) -> Any:
    """The runner's request. A text prompt gets the model's BOS (as llama-server adds it) unless
    the rendered text already starts with it (templates that write `bos_token` themselves)."""
    from server.runner.types import CompletionRequest, SamplingOptions

    bos_text = getattr(info, "bos_text", "") if info is not None else ""
    add_special = not (isinstance(prompt, str) and bos_text and prompt.startswith(bos_text))
    try:
        sampling = SamplingOptions.from_options(options)
    except CLIENT_ERRORS as exc:
        raise RequestError(str(exc), 400) from None
    return CompletionRequest(prompt=prompt, options=sampling, format=fmt, add_special=add_special,
                             logprobs=logprobs, top_logprobs=top_logprobs if logprobs else 0)


def _runner_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    from server.runner import errors as runner_errors

    failures = (runner_errors.RunnerCrashed, runner_errors.RunnerClosed)
    client = (runner_errors.InvalidRequest,)
    return failures, client


RUNNER_FAILURES, CLIENT_ERRORS = _runner_errors()


# -- prompts -----------------------------------------------------------------------------------


async def render(job: TextJob, model: ResolvedModel, runner: Any, num_ctx: int) -> Any:
    """The prompt text for `job` (Ollama's rules in toolchain.prompt), truncated to `num_ctx`.

    Template: the request's (generate), else the model's TEMPLATE layer, else the GGUF's
    `tokenizer.chat_template` (Jinja), else `{{ .Prompt }}`.
    """
    from toolchain import prompt as prompts
    from toolchain.template import TemplateError

    if job.kind == "generate" and job.raw:
        return job.prompt
    count = _token_counter(runner, num_ctx)
    has_projector = bool(model.projectors)
    jinja = None if model.template is not None or (job.kind == "generate" and job.template) else chat_template(model)
    try:
        if job.kind == "chat":
            messages = prompts.chat_messages([m.to_json() for m in job.messages], model_system=model.system or "",
                                             model_messages=model.messages)
            if jinja is not None:
                return await _jinja_prompt(jinja, messages, job.tools, runner, count, job.truncate, num_ctx, job.think)
            return await asyncio.to_thread(
                prompts.chat_prompt, model.template, messages, job.tools, num_ctx=num_ctx, count_tokens=count,
                think=job.think, truncate=job.truncate, has_projector=has_projector)
        context_text = await runner.detokenize(job.context) if job.context else None
        if jinja is not None and not job.suffix:
            messages = []
            if job.system or model.system:
                messages.append({"role": "system", "content": job.system or model.system})
            if context_text is None:
                messages.extend(model.messages)
            messages.append({"role": "user", "content": job.prompt})
            text = await _jinja_prompt(jinja, messages, [], runner, count, job.truncate, num_ctx, job.think)
            return (context_text or "") + text
        result = await asyncio.to_thread(
            prompts.generate_prompt, model.template, prompt=job.prompt, system=job.system or "", suffix=job.suffix,
            request_template=job.template or "", model_system=model.system or "", model_messages=model.messages,
            context_text=context_text, images=job.images, think=job.think, num_ctx=num_ctx, count_tokens=count,
            truncate=job.truncate)
        return result.prompt
    except TemplateError as exc:
        raise RequestError(f"template error: {exc}", 400) from None
    except prompts.PromptError as exc:
        raise RequestError(str(exc), 400) from None


async def _jinja_prompt(source: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]], runner: Any,
                        count: Any, truncate: bool, num_ctx: int, think: Any = None) -> str:
    """Render a GGUF `tokenizer.chat_template` (server.chat_template), dropping the oldest
    non-system messages until it fits (the latest message is always kept). As Ollama asks
    llama-server: a set `think` is `enable_thinking` (and a level `reasoning_effort`), and a
    message's `thinking` is its `reasoning_content`."""
    from server.chat_template import render_jinja_chat_template
    from toolchain.thinking import think_enabled

    info = getattr(runner, "info", None)
    bos, eos = getattr(info, "bos_text", "") or "", getattr(info, "eos_text", "") or ""
    extra: dict[str, Any] = {}
    if think is not None:
        extra["enable_thinking"] = think_enabled(think)
        if isinstance(think, str):
            extra["reasoning_effort"] = think

    def build() -> str:
        msgs = [dict(m) for m in messages]
        for m in msgs:
            if m.get("thinking") and "reasoning_content" not in m:
                m["reasoning_content"] = m["thinking"]
        while True:
            text = render_jinja_chat_template(source, msgs, True, bos, eos, tools or None, **extra)
            droppable = [i for i, m in enumerate(msgs[:-1]) if m.get("role") != "system"]
            if not truncate or not droppable or count(text) <= num_ctx:
                return text
            del msgs[droppable[0]]

    return await asyncio.to_thread(build)


def _token_counter(runner: Any, num_ctx: int) -> Any:
    """A synchronous token counter for the prompt builders, run in a worker thread: texts whose
    UTF-8 length already fits are not tokenized (a token is at least one byte); others are
    tokenized by the runner on the event loop."""
    loop = asyncio.get_running_loop()

    def count(text: str) -> int:
        upper = len(text.encode("utf-8")) + 2
        if upper <= num_ctx:
            return upper
        return len(asyncio.run_coroutine_threadsafe(runner.tokenize(text, True, True), loop).result())

    return count


def thinking_tags(model: ResolvedModel) -> tuple[str, str]:
    """The tags a thinking model wraps its reasoning in: inferred from its TEMPLATE as Ollama
    does, else `<think>`/`</think>` (the tags its capability was detected by: a GGUF chat
    template, or a TEMPLATE that mentions them outside Ollama's pattern). ("", "") for others."""
    from toolchain.thinking import DEFAULT_TAGS, infer_tags

    if "thinking" not in model.capabilities:
        return "", ""
    opening, closing = infer_tags(model.template) if model.template else ("", "")
    if opening and closing:
        return opening, closing
    return DEFAULT_TAGS


def thinking_parser(model: ResolvedModel, think: Any, prompt: Any) -> Any:
    """A streaming thinking/content splitter for one response (toolchain.thinking), or None when
    the request does not think. As Ollama: when the rendered prompt already ends with the
    opening tag (templates that open the block for the model), the parser starts inside it."""
    from toolchain.thinking import ThinkingParser, think_enabled

    if not think_enabled(think):
        return None
    opening, closing = thinking_tags(model)
    if not opening or not closing:
        return None
    parser = ThinkingParser(opening, closing)
    if isinstance(prompt, str) and prompt.strip().endswith(opening):
        parser.add(opening)
    return parser


def tool_parser(model: ResolvedModel, tools: list[dict[str, Any]]) -> Any:
    """A streaming tool-call parser for one response (toolchain.toolcalls, Ollama's rules: the
    tag comes from the model's TEMPLATE, else any JSON object naming a tool is a call)."""
    from toolchain.toolcalls import ToolCallParser

    return ToolCallParser(model.template, tools)
