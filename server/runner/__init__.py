"""Runner: one process per loaded model, continuous batching over llama.cpp's low-level API.

Public API (no llama.cpp import in the server process):
    server.runner.client  Runner, Completion
    server.runner.types   LoadSpec, LoraAdapter, ModelInfo, CompletionRequest, SamplingOptions,
                          Chunk, Stats, EmbedResult
    server.runner.errors  RunnerError, LoadError, LoadTimeout, RunnerCrashed, RunnerClosed,
                          InvalidRequest, InputTooLong
See server/runner/client.py for usage.
"""

from server.runner.client import Completion, Runner
from server.runner.errors import (
    InputTooLong,
    InvalidRequest,
    LoadError,
    LoadTimeout,
    RunnerClosed,
    RunnerCrashed,
    RunnerError,
)
from server.runner.types import (
    Chunk,
    CompletionRequest,
    EmbedResult,
    LoadSpec,
    LoraAdapter,
    ModelInfo,
    SamplingOptions,
    Stats,
)

__all__ = [
    "Runner", "Completion", "LoadSpec", "LoraAdapter", "ModelInfo", "CompletionRequest", "SamplingOptions",
    "Chunk", "Stats", "EmbedResult", "RunnerError", "LoadError", "LoadTimeout", "RunnerCrashed",
    "RunnerClosed", "InvalidRequest", "InputTooLong",
]
