"""Reads a GGUF file's header: key/value metadata and tensor descriptors, never the weights.

Total over any input: every length, count and offset is bounded and checked before it is used, so
a truncated, hostile or non-GGUF file raises `GGUFError` naming the problem (never another
exception, never an allocation proportional to a number in the file). Arrays larger than
`max_array` are not materialised (their value is `None`, as Ollama reports them when not verbose);
strings inside such arrays are skipped without being decoded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
MAX_STRING = 16 << 20
MAX_ARRAY = 64 << 20
MAX_DIMS = 4
DEFAULT_ALIGNMENT = 32

# GGUF value types: struct format, or None for string/array.
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9

# Ollama's FileType names (fs/ggml/type.go); 0 (all F32) reads as "unknown" there, as it does here.
FILE_TYPES = {
    1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M",
    13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
    20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}


class GGUFError(ValueError):
    """The bytes are not a usable GGUF file; the message says why."""


@dataclass(frozen=True)
class Tensor:
    name: str
    kind: int
    shape: tuple[int, ...]
    offset: int

    @property
    def type_name(self) -> str:
        from gguf.constants import GGMLQuantizationType

        try:
            return GGMLQuantizationType(self.kind).name
        except ValueError:
            return f"type{self.kind}"


@dataclass
class GGUFInfo:
    version: int
    kv: dict[str, Any]
    tensors: list[Tensor] = field(default_factory=list)
    parameter_count: int = 0
    data_offset: int = 0
    file_size: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        """A key, trying `<architecture>.<key>` too (Ollama's KV accessors)."""
        if key in self.kv:
            return self.kv[key]
        return self.kv.get(f"{self.architecture}.{key}", default)

    @property
    def architecture(self) -> str:
        value = self.kv.get("general.architecture")
        return value if isinstance(value, str) else "unknown"

    @property
    def file_type(self) -> str:
        value = self.kv.get("general.file_type")
        return FILE_TYPES.get(value, "unknown") if isinstance(value, int) and not isinstance(value, bool) else "unknown"

    @property
    def kind(self) -> str:
        value = self.kv.get("general.type")
        return value if isinstance(value, str) else ""

    def model_info(self) -> dict[str, Any]:
        """Ollama's `/api/show` `model_info`: the KV pairs (with the computed parameter count),
        minus `general.name` and `tokenizer.chat_template`."""
        info = {k: v for k, v in self.kv.items() if k not in ("general.name", "tokenizer.chat_template")}
        info["general.parameter_count"] = self.parameter_count
        return info


def is_gguf(head: bytes) -> bool:
    return head[:4] == MAGIC


def read(source: str | Path | BinaryIO, *, max_array: int = 0, tensors: bool = True) -> GGUFInfo:
    """Parse the header of `source` (a path or a seekable binary file).

    `max_array`: arrays with more elements are returned as `None` (−1 keeps every array).
    With `tensors`, tensor descriptors are read and each tensor's extent is checked against the
    file size, so a file whose data was cut off is rejected too.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return read(f, max_array=max_array, tensors=tensors)
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return _Parser(io.BufferedReader(_NoClose(source), 1 << 16), size, max_array).parse(tensors)


class _NoClose(io.RawIOBase):
    """Lets a BufferedReader wrap a caller's file without closing it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Parser:
    def __init__(self, f: io.BufferedReader, size: int, max_array: int) -> None:
        self.f = f
        self.size = size
        self.pos = 0
        self.max_array = max_array

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise GGUFError(f"truncated GGUF file: unexpected end of file reading {what}")
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFError(f"truncated GGUF file: unexpected end of file reading {what}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFError(f"truncated GGUF file: unexpected end of file reading {what}")
        while n:
            chunk = self.f.read(min(n, 1 << 16))
            if not chunk:
                raise GGUFError(f"truncated GGUF file: unexpected end of file reading {what}")
            n -= len(chunk)
            self.pos += len(chunk)

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, keep: bool = True) -> str | None:
        n = self.scalar("<Q", what)
        if n > MAX_STRING:
            raise GGUFError(f"GGUF string length {n} exceeds maximum {MAX_STRING} ({what})")
        if not keep:
            self.skip(n, what)
            return None
        return self.take(n, what).decode("utf-8", errors="replace")

    def value(self, vtype: int, what: str, keep: bool = True) -> Any:
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            v = self.scalar(fmt, what)
            if fmt == "<f":
                v = _float32(v)
            return v
        if vtype == _STRING:
            return self.string(what, keep)
        if vtype == _ARRAY:
            etype = self.scalar("<I", what)
            n = self.scalar("<Q", what)
            if n > MAX_ARRAY:
                raise GGUFError(f"GGUF array size {n} exceeds maximum {MAX_ARRAY} ({what})")
            if etype == _ARRAY:
                raise GGUFError(f"nested GGUF arrays are not supported ({what})")
            if etype not in _SCALARS and etype != _STRING:
                raise GGUFError(f"invalid GGUF array type {etype} ({what})")
            materialise = keep and (self.max_array < 0 or n <= self.max_array)
            if etype in _SCALARS and not materialise:
                self.skip(n * struct.calcsize(_SCALARS[etype]), what)
                return None
            items = [self.value(etype, what, materialise) for _ in range(n)]
            return items if materialise else None
        raise GGUFError(f"invalid GGUF value type {vtype} ({what})")

    def parse(self, with_tensors: bool) -> GGUFInfo:
        if self.size < 4 or self.take(4, "magic") != MAGIC:
            raise GGUFError("not a GGUF file (bad magic)")
        version = self.scalar("<I", "version")
        if version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {version}")
        n_tensors = self.scalar("<Q", "tensor count")
        n_kv = self.scalar("<Q", "metadata count")
        # every KV needs >= 12 bytes and every tensor >= 24: a count beyond that cannot be real
        if n_kv * 12 > self.size or n_tensors * 24 > self.size:
            raise GGUFError("truncated GGUF file: header counts exceed the file size")
        kv: dict[str, Any] = {}
        for i in range(n_kv):
            key = self.string(f"metadata key {i}") or ""
            vtype = self.scalar("<I", f"type of {key!r}")
            kv[key] = self.value(vtype, repr(key))
        info = GGUFInfo(version=version, kv=kv, file_size=self.size)
        if not with_tensors:
            return info
        alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
            raise GGUFError(f"invalid GGUF alignment: {alignment}")
        for i in range(n_tensors):
            name = self.string(f"tensor {i} name") or ""
            dims = self.scalar("<I", f"tensor {name!r} dimensions")
            if dims > MAX_DIMS:
                raise GGUFError(f"tensor {name!r} dimensions {dims} exceeds maximum {MAX_DIMS}")
            shape = tuple(self.scalar("<Q", f"tensor {name!r} shape") for _ in range(dims))
            kind = self.scalar("<I", f"tensor {name!r} type")
            offset = self.scalar("<Q", f"tensor {name!r} offset")
            info.tensors.append(Tensor(name, kind, shape, offset))
        info.data_offset = -(-self.pos // alignment) * alignment
        for t in info.tensors:
            elements = 1
            for d in t.shape:
                elements *= d
            info.parameter_count += elements
            nbytes = _tensor_bytes(t, elements)
            if info.data_offset + t.offset + nbytes > self.size:
                raise GGUFError(f"truncated GGUF file: tensor {t.name!r} extends past the end of the file")
        return info


def _tensor_bytes(t: Tensor, elements: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(t.kind)]
    except (ValueError, KeyError):
        raise GGUFError(f"tensor {t.name!r} has unknown type {t.kind}") from None
    if t.shape and t.shape[0] % block:
        raise GGUFError(f"tensor {t.name!r} row of {t.shape[0]} elements is not a multiple of block size {block}")
    return elements // block * type_size


def _float32(v: float) -> float:
    """The shortest decimal that round-trips the float32 (what Go prints), as a Python float."""
    packed = struct.pack("<f", v)
    for digits in range(1, 10):
        text = f"{v:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return float(text)
    return v
