"""Running inference for a request: resolve the model, schedule a runner, render, generate.

The routes (native here, OpenAI later) describe a generation as a `TextJob` and get back an
async iterator of *events*, plain tuples, that they shape into their own wire format:

    ("text", str)                 a piece of generated text (the answer)
    ("thinking", str)             a piece of a thinking model's reasoning (split off the text)
    ("logprobs", [dict, ...])     with `job.logprobs`: the entries of the tokens behind the text
                                  and thinking events that follow it (Ollama's Logprob shape)
    ("tool_calls", [dict, ...])   tool calls parsed from the output (chat with tools)
    ("done", Final)               the end, with done_reason and statistics
    ("debug", dict)               instead of all that, for `_debug_render_only`: the prompt

Errors before the first event are raised from the first `__anext__()` (the routes turn them
into a status and `{"error": ...}`); errors later are raised mid-iteration.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from server.inference_types import Message, TextJob
from server.scheduler import Lease, Scheduler
from server.streaming import RequestError
from toolchain.thinking import think_enabled

# Hard bounds for load-time options: beyond them a request is a client mistake (400), not a
# reason to try (and fail) to allocate.
MAX_NUM_CTX = 1 << 20
MAX_NUM_PREDICT = 1 << 24

# Ollama's answer (llama-server runner) when truncation is disabled and the prompt does not fit.
PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the model; shorten the "
                   "prompt, adjust the context length in settings, or use a model with a longer context length")


@dataclass
class Final:
    """The end of a generation: Ollama's done_reason and Metrics (durations in ns)."""

    done_reason: str
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    context: Optional[list[int]] = None
    # The whole prompt and the part of it reused from the KV cache (OpenAI's usage counts every
    # prompt token; Ollama's prompt_eval_count only the evaluated ones). Not native metrics.
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def metrics(self) -> dict[str, int]:
        """The six metric keys, omitted when zero (Go's omitempty)."""
        out = {}
        for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                    "eval_count", "eval_duration"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


@dataclass
class ResolvedModel:
    """What inference needs to know about a stored model (from the store's manifest)."""

    name: str  # as the client sent it
    short: str  # display form, e.g. "gemma3:270m"
    full: str  # e.g. "registry.ollama.ai/library/gemma3:270m"
    digest: str  # manifest sha256 hex
    model_path: str
    size: int
    template: Optional[str]
    system: Optional[str]
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    projectors: list[str] = field(default_factory=list)
    gguf: Any = None  # server.gguf_info.GGUFInfo of the model blob
    capabilities: frozenset[str] = frozenset()


def now_ns() -> int:
    return time.perf_counter_ns()


class Engine:
    """Inference for one server: owns the scheduler, talks to the store and the runners."""

    def __init__(self, scheduler: Scheduler, store: Any) -> None:
        self.scheduler = scheduler
        self.store = store
        self.observer: Any = None  # server.observe.Metrics: told about every finished generation

    # -- model resolution ----------------------------------------------------------------------

    def resolve(self, name: str, *, not_found: str = "model '{name}' not found") -> ResolvedModel:
        from server import model_source

        return model_source.resolve(self.store, name, not_found=not_found)

    # -- options ---------------------------------------------------------------------------------

    def options(self, model: ResolvedModel, request_options: dict[str, Any]) -> dict[str, Any]:
        """Modelfile PARAMETERs overridden by the request's options, checked."""
        from server import model_source

        merged = model_source.merge_options(model.params, request_options)
        for key in ("num_ctx", "num_batch", "num_thread"):
            value = merged.get(key)
            if value is None:
                continue
            if value < 0 or (key == "num_ctx" and value > MAX_NUM_CTX):
                raise RequestError(f'invalid option "{key}": {value} is out of range', 400)
        num_predict = merged.get("num_predict")
        if num_predict is not None and (num_predict < -2 or num_predict > MAX_NUM_PREDICT):
            raise RequestError(f'invalid option "num_predict": {num_predict} is out of range', 400)
        return merged

    def load_spec(self, model: ResolvedModel, options: dict[str, Any], *, embedding: bool = False) -> Any:
        from server import model_source

        settings = self.scheduler.settings
        num_ctx = options.get("num_ctx") or settings.context_length
        train = model.gguf.get("context_length") if model.gguf is not None else None
        if isinstance(train, int) and not isinstance(train, bool) and train > 0:
            num_ctx = min(num_ctx, train)  # as Ollama: never beyond what the model was trained for
        return model_source.load_spec(
            model, num_ctx=max(int(num_ctx), 4), num_parallel=settings.num_parallel,
            num_batch=options.get("num_batch"), num_thread=options.get("num_thread"),
            use_mmap=options.get("use_mmap"), embedding=embedding,
            flash_attention=getattr(settings, "flash_attention", None),
        )

    async def acquire(self, model: ResolvedModel, spec: Any, keep_alive: Optional[float]) -> Lease:
        from server import model_source
        from server.scheduler import ModelRef

        ref = ModelRef(name=model.short, digest=model.digest, details=model.details,
                       size=model_source.memory_estimate(model, spec))
        return await self.scheduler.acquire(spec, ref, keep_alive)

    # -- text generation -------------------------------------------------------------------------

    async def generate(self, job: TextJob, started: int) -> AsyncIterator[tuple[str, Any]]:
        """Events for one generate or chat request (see the module docstring)."""
        from server import model_source

        model = self.resolve(job.model)
        if job.is_empty and job.keep_alive_set and job.keep_alive == 0:
            self.scheduler.expire(model.model_path)
            yield ("done", Final(done_reason="unload"))
            return
        if job.kind == "generate" and job.raw and (job.template or job.system or job.context):
            raise RequestError("raw mode does not support template, system, or context", 400)
        caps = model_source.capabilities(model)
        if "completion" not in caps:
            raise RequestError(f'"{job.model}" does not support {job.kind}', 400)
        if job.suffix and "insert" not in caps:
            raise RequestError(f"{model.full} does not support insert", 400)
        if job.tools and "tools" not in caps:
            raise RequestError(f"{model.full} does not support tools", 400)
        if job.images and "vision" not in caps:
            raise RequestError(f"{model.full} does not support vision", 400)
        if job.images:  # a projector model: the runner has no image path yet, so say so
            raise RequestError("image input is not supported by this server yet", 501)
        if think_enabled(job.think) and "thinking" not in caps:
            raise RequestError(f'"{job.model}" does not support thinking', 400)
        if job.think is None and "thinking" in caps:
            job = dataclasses.replace(job, think=True)  # as Ollama: a thinking model thinks unless told not to
        options = self.options(model, job.options)
        if not job.shift and options.get("num_predict", -1) == -1:
            options["num_predict"] = -2  # no context shift: stop with "length" when the context is full
        spec = self.load_spec(model, options)
        lease = await self.acquire(model, spec, job.keep_alive)
        try:
            load_ns = now_ns() - started
            if job.is_empty:
                yield ("done", Final(done_reason="load"))  # Ollama answers a load without metrics
                return
            runner = lease.runner
            prompt = await model_source.render(job, model, runner, lease.num_ctx)
            if job.debug_render_only:
                yield ("debug", {"rendered_template": prompt, "image_count": len(job.images)})
                return
            final_chunk = None
            first_text_ns = 0
            tools = model_source.tool_parser(model, job.tools) if job.tools else None
            thinking = model_source.thinking_parser(model, job.think, prompt)
            # As Ollama's /api/chat: with a format, a model that thinks first runs without the
            # grammar (which would forbid its reasoning) and, once its answer begins, again with
            # it, the reasoning so far added to the chat as the assistant's thinking.
            deferred = job.kind == "chat" and job.format is not None and thinking is not None
            thoughts: list[str] = []
            while True:
                request = model_source.completion_request(
                    prompt, options, None if deferred else job.format, getattr(runner, "info", None),
                    logprobs=job.logprobs, top_logprobs=job.top_logprobs)
                if not job.truncate and isinstance(prompt, str):
                    n = len(await runner.tokenize(prompt, request.add_special, True))
                    if n > lease.num_ctx:
                        raise RequestError(PROMPT_TOO_LONG, 400)
                restart = False
                stream = None
                try:
                    stream = await runner.completion(request)
                    async for chunk in stream:
                        text = chunk.text
                        if text and not first_text_ns:
                            first_text_ns = now_ns()
                        if chunk.logprobs:
                            yield ("logprobs", chunk.logprobs)
                        if thinking is not None and text:
                            thought, text = thinking.add(text)
                            if thought:
                                thoughts.append(thought)
                                yield ("thinking", thought)
                            if deferred and text:
                                restart = True  # the answer begins: drop it, run again with the format
                                break
                        for event in _answer(text, tools):
                            yield event
                        if chunk.done:
                            final_chunk = chunk
                            break
                except model_source.RUNNER_FAILURES as exc:
                    lease.runner_failed()
                    raise RequestError(f"model runner has unexpectedly stopped: {exc}", 500) from exc
                except model_source.CLIENT_ERRORS as exc:
                    raise RequestError(str(exc), 400) from exc
                finally:
                    if stream is not None:
                        await stream.aclose()
                if not restart:
                    break
                deferred, thinking = False, None
                if thoughts:  # (a model that skipped thinking just starts again, constrained)
                    messages = [*job.messages, Message(role="assistant", content="", thinking="".join(thoughts))]
                    prompt = await model_source.render(dataclasses.replace(job, messages=messages), model, runner,
                                                       lease.num_ctx)
            if thinking is not None:
                thought, text = thinking.finish()
                if thought:
                    yield ("thinking", thought)
                for event in _answer(text, tools):
                    yield event
            if tools is not None:
                rest = tools.finish()
                if rest:
                    yield ("text", rest)
            final = _final(final_chunk, started, load_ns, job)
            if self.observer is not None:
                self.observer.record_generation(
                    model.short, prompt_tokens=final.prompt_eval_count, generated_tokens=final.eval_count,
                    ttft_seconds=(first_text_ns - started) / 1e9 if first_text_ns else None,
                    load_wait_seconds=load_ns / 1e9)
            yield ("done", final)
        finally:
            lease.release()

    # -- embeddings ------------------------------------------------------------------------------

    async def embed(self, name: str, inputs: list[str], *, truncate: bool, options: dict[str, Any],
                    keep_alive: Optional[float], started: int,
                    not_found: str = 'model "{name}" not found, try pulling it first') -> tuple[list[list[float]], int, int]:
        """(vectors as the runner returns them, prompt token count, load ns)."""
        from server import model_source

        model = self.resolve(name, not_found=not_found)
        merged = self.options(model, options)
        spec = self.load_spec(model, merged, embedding=model_source.is_embedding_model(model))
        lease = await self.acquire(model, spec, keep_alive)
        try:
            load_ns = now_ns() - started
            if not inputs:
                return [], 0, load_ns
            try:
                result = await lease.runner.embed(inputs, truncate)
            except model_source.RUNNER_FAILURES as exc:
                lease.runner_failed()
                raise RequestError(f"model runner has unexpectedly stopped: {exc}", 500) from exc
            except model_source.CLIENT_ERRORS as exc:
                raise RequestError(str(exc), 400) from exc
            return result.embeddings, result.prompt_eval_count, load_ns
        finally:
            lease.release()


def _answer(text: str, tools: Any) -> list[tuple[str, Any]]:
    """The events for a piece of the answer: text, and tool calls the tool parser finds in it."""
    if not text:
        return []
    if tools is None:
        return [("text", text)]
    text, calls = tools.feed(text)
    events: list[tuple[str, Any]] = [("text", text)] if text else []
    if calls:
        events.append(("tool_calls", calls))
    return events


def _final(chunk: Any, started: int, load_ns: int, job: TextJob) -> Final:
    stats = getattr(chunk, "stats", None)
    final = Final(
        done_reason=(getattr(chunk, "done_reason", None) or "stop"),
        total_duration=now_ns() - started,
        load_duration=load_ns,
    )
    if stats is not None:
        final.prompt_eval_count = stats.prompt_eval_count
        final.prompt_eval_duration = stats.prompt_eval_duration
        final.eval_count = stats.eval_count
        final.eval_duration = stats.eval_duration
        final.prompt_tokens = getattr(stats, "prompt_tokens", 0)
        final.cached_tokens = getattr(stats, "cached_tokens", 0)
    if job.kind == "generate" and not job.raw:
        final.context = getattr(chunk, "context", None)
    return final


def l2_normalise(vector: list[float], dimensions: Optional[int] = None) -> list[float]:
    """Ollama's normalisation: L2 norm 1, after truncating to `dimensions` when given."""
    if dimensions and 0 < dimensions < len(vector):
        vector = vector[:dimensions]
    total = math.fsum(v * v for v in vector)
    if not math.isfinite(total):
        raise RequestError("embedding contains NaN or Inf values", 400)
    norm = math.sqrt(total)
    if norm == 0:
        return [float(v) for v in vector]
    return [v / norm for v in vector]
