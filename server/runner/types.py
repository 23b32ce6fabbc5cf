"""Values exchanged between the server and a runner: what to load, what to run, what comes back.

Plain dataclasses (picklable, no llama.cpp import) so the server process never loads llama.cpp.
Option names are Ollama's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from server.runner.errors import InvalidRequest


@dataclass(frozen=True)
class LoraAdapter:
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model. `num_ctx` is per slot: the context holds num_ctx × num_parallel tokens."""

    model_path: str
    num_ctx: int = 4096
    num_parallel: int = 4
    num_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    num_batch: int = 512
    # Physical batch (llama.cpp n_ubatch); None = min(num_batch, 512). Its compute buffer grows
    # by ~1 MiB per token for a 262k-vocabulary model, so small values save memory.
    num_ubatch: int | None = None
    embedding: bool = False  # an embedding-only model: no generation, pooled per the model
    adapters: tuple[LoraAdapter, ...] = ()
    use_mmap: bool = True
    # OLLAMA_FLASH_ATTENTION: None = llama.cpp's auto choice (on for the CPU). On makes decoding
    # cheaper and, with scripts/llama-patches built in, short prompts after a long cached history
    # too (a chat's next turn; unpatched, off is cheaper there); bench/turns.py and
    # bench/serving.py measure both.
    flash_attention: bool | None = None
    name: str = ""  # for messages only

    def __post_init__(self) -> None:
        for attr in ("num_ctx", "num_parallel", "num_threads", "num_batch"):
            v = getattr(self, attr)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidRequest(f"invalid {attr} {v!r}: must be a positive integer")
        if self.num_ctx * self.num_parallel > 2**31 - 1:
            raise InvalidRequest(
                f"invalid num_ctx {self.num_ctx}: num_ctx × num_parallel ({self.num_parallel}) exceeds 2^31 tokens"
            )
        if self.flash_attention is not None and not isinstance(self.flash_attention, bool):
            raise InvalidRequest(f"invalid flash_attention {self.flash_attention!r}: must be true, false or None")
        if self.num_ubatch is not None and (not isinstance(self.num_ubatch, int) or self.num_ubatch < 1):
            raise InvalidRequest(f"invalid num_ubatch {self.num_ubatch!r}")


@dataclass(frozen=True)
class ModelInfo:
    """What the server needs to know about a loaded model."""

    n_ctx_per_slot: int
    n_ctx: int
    n_parallel: int
    n_ctx_train: int
    n_vocab: int
    n_embd: int  # embedding_length
    chat_template: str | None  # tokenizer.chat_template from the GGUF
    bos_token: int | None
    eos_token: int | None
    bos_text: str
    eos_text: str
    add_bos: bool
    metadata: dict[str, str]  # every GGUF key/value llama.cpp exposes, as strings
    description: str  # llama_model_desc, e.g. "gemma3 270M Q4_K - Medium"
    size: int  # bytes of tensors
    n_params: int
    embedding_only: bool

    @property
    def embedding_length(self) -> int:
        return self.n_embd


# Ollama's defaults (api/types.go DefaultOptions).
_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": -1,
    "num_predict": -1,
    "num_keep": 4,
    "stop": (),
}


@dataclass(frozen=True)
class SamplingOptions:
    """The per-request options the runner applies (Ollama names and defaults)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    num_predict: int = -1
    num_keep: int = 4
    stop: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> "SamplingOptions":
        """Pick the options this runner knows from an Ollama options dict (others are ignored:
        load-time ones like num_ctx belong to LoadSpec). None means "default"."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            v = (options or {}).get(f.name)
            if v is None:
                continue
            default = _DEFAULTS[f.name]
            if f.name == "stop":
                if isinstance(v, str):
                    v = (v,)
                if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
                    raise InvalidRequest("option \"stop\" must be a string or a list of strings")
                v = tuple(s for s in v if s)
            elif isinstance(default, int) and not isinstance(default, bool) and not isinstance(default, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
                    raise InvalidRequest(f"option \"{f.name}\" must be an integer, got {v!r}")
                v = int(v)
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidRequest(f"option \"{f.name}\" must be a number, got {v!r}")
                v = float(v)
            values[f.name] = v
        opts = cls(**values)
        if opts.num_predict < -2:
            raise InvalidRequest(f"invalid num_predict {opts.num_predict}: must be ≥ -2")
        if opts.temperature < 0:
            raise InvalidRequest(f"invalid temperature {opts.temperature}: must be ≥ 0")
        return opts


@dataclass(frozen=True)
class CompletionRequest:
    """One generation. `prompt` is text (tokenized with special tokens parsed, BOS added when the
    model wants it) or a list of token ids (used as is). `format` is "json" or a JSON schema (dict
    or JSON string) enforced with a grammar; `grammar` is a GBNF string (takes precedence)."""

    prompt: str | list[int]
    options: SamplingOptions = field(default_factory=SamplingOptions)
    grammar: str | None = None
    format: str | dict | None = None
    add_special: bool = True  # for text prompts: add BOS per the model
    logprobs: bool = False  # report each generated token's log probability (Chunk.logprobs)
    top_logprobs: int = 0  # ... with this many most likely alternatives (0-20)


@dataclass
class Stats:
    """Per-request statistics, durations in nanoseconds (Ollama's fields)."""

    prompt_eval_count: int = 0  # tokens evaluated for the prompt (cached prefix not counted)
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    prompt_tokens: int = 0  # the whole prompt after truncation (cached + evaluated)
    cached_tokens: int = 0  # prompt tokens reused from the slot's KV cache
    truncated: bool = False  # the prompt was longer than the context and was cut (num_keep kept)


@dataclass
class Chunk:
    """A piece of generated text; the last one has done=True, done_reason and stats."""

    text: str
    done: bool = False
    done_reason: str | None = None  # "stop" | "length" on the final chunk
    stats: Stats | None = None
    context: list[int] | None = None  # final chunk: prompt + generated tokens (generate's `context`)
    # With CompletionRequest.logprobs: one entry per generated token since the previous chunk
    # (server.runner.logprobs); the final chunk carries those whose text was never emitted.
    logprobs: list[dict] | None = None


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    prompt_eval_count: int
    prompt_eval_duration: int = 0  # ns
