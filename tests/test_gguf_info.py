"""The GGUF header reader: real files read right, every malformed file rejected with GGUFError."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from server import gguf_info
from server.gguf_info import GGUFError


def kv_string(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def test_reads_the_tiny_model(tiny_gguf: Path):
    info = gguf_info.read(tiny_gguf)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.file_type == "unknown"  # general.file_type 0 (all F32) reads as unknown in Ollama
    assert info.kv["llama.context_length"] == 2048
    assert info.kv["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # float32 shown as Go prints it
    assert info.kv["tokenizer.ggml.tokens"] is None  # large arrays not materialised
    assert info.parameter_count == sum(
        t.shape[0] * (t.shape[1] if len(t.shape) > 1 else 1) for t in info.tensors
    )
    model_info = info.model_info()
    assert "general.name" not in model_info and model_info["general.parameter_count"] == info.parameter_count
    assert info.tensors[0].type_name == "F32"
    verbose = gguf_info.read(tiny_gguf, max_array=-1)
    assert verbose.kv["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]


def test_reads_gemma(gemma_gguf: Path):
    info = gguf_info.read(gemma_gguf)
    assert (info.architecture, info.file_type) == ("gemma3", "Q4_K_M")
    assert info.parameter_count == 268_098_176
    assert info.kv["gemma3.context_length"] == 32768


def test_every_truncation_is_rejected(tiny_gguf: Path):
    data = tiny_gguf.read_bytes()
    info = gguf_info.read(io.BytesIO(data))
    cuts = list(range(0, info.data_offset + 64, 7)) + [len(data) - 1, len(data) - 4096]
    for cut in cuts:
        with pytest.raises(GGUFError):
            gguf_info.read(io.BytesIO(data[:cut]))


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty", b"", "not a GGUF file"),
        ("magic only (CVE-2024-39720)", b"GGUF", "truncated"),
        ("not gguf", b"PK\x03\x04" + b"\x00" * 60, "not a GGUF file"),
        ("version 1", header(0, 0, version=1), "unsupported GGUF version 1"),
        ("big-endian", b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "unsupported GGUF version"),
        ("kv count beyond file", header(0, 1 << 40), "exceed the file size"),
        ("tensor count beyond file", header(1 << 40, 0), "exceed the file size"),
        ("oversized string", header(0, 1) + struct.pack("<Q", (16 << 20) + 1), "exceeds maximum"),
        (
            "oversized array",
            header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, (64 << 20) + 1),
            "exceeds maximum",
        ),
        ("bad value type", header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 99), "invalid GGUF value type"),
        (
            "nested array",
            header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 9, 1),
            "nested",
        ),
        (
            "zero alignment",
            header(0, 1) + struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 0),
            "invalid GGUF alignment",
        ),
        (
            "too many dimensions",
            header(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 5) + b"\x00" * 64,
            "exceeds maximum 4",
        ),
        (
            "tensor data past end (CVE-2026-7482)",
            header(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 1 << 40, 0, 0) + b"\x00" * 64,
            "extends past the end",
        ),
        (
            "row not a multiple of the block size",
            header(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 31, 2, 0) + b"\x00" * 64,
            "not a multiple of block size",
        ),
        (
            "unknown tensor type",
            header(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<IQIQ", 1, 1, 9999, 0) + b"\x00" * 64,
            "unknown type",
        ),
    ],
)
def test_malformed_headers(name, data, message):
    with pytest.raises(GGUFError, match=message):
        gguf_info.read(io.BytesIO(data))


def test_minimal_valid_file():
    data = header(0, 1) + kv_string("general.architecture", "test")
    info = gguf_info.read(io.BytesIO(data))
    assert info.architecture == "test" and info.tensors == [] and info.parameter_count == 0
