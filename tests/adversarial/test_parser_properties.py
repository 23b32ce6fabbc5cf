"""Property-based tests (Hypothesis) of the parsers that read untrusted bytes and strings.

Oracle for each: a value or the parser's own error class, never another exception, and (for the
GGUF reader, whose input declares sizes) never an allocation that follows a number in the input:
peak traced memory stays far below what the absurd counts and lengths would ask for.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import PurePosixPath

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server import gguf_info
from toolchain import modelfile as mf
from toolchain.names import Name, parse_name

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEMORY_CEILING = 16 << 20  # bytes; every generated file is < 64 KiB

# -- GGUF ------------------------------------------------------------------------------------------------

u32 = st.one_of(st.integers(0, 16), st.sampled_from([2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
u64 = st.one_of(st.integers(0, 64), st.sampled_from([2**63, 2**64 - 1, 16 << 20, (16 << 20) + 1, 64 << 20]),
                st.integers(0, 2**64 - 1))


def _string(s: bytes, declared: int | None = None) -> bytes:
    return struct.pack("<Q", len(s) if declared is None else declared) + s


@st.composite
def kv_value(draw) -> bytes:
    vtype = draw(st.one_of(st.integers(0, 12), u32))
    if vtype in gguf_info._SCALARS:
        size = struct.calcsize(gguf_info._SCALARS[vtype])
        return struct.pack("<I", vtype) + draw(st.binary(min_size=size, max_size=size))
    if vtype == 8:
        s = draw(st.binary(max_size=32))
        return struct.pack("<I", 8) + _string(s, draw(st.one_of(st.none(), u64)))
    if vtype == 9:
        etype = draw(st.one_of(st.integers(0, 12), u32))
        n = draw(st.one_of(st.integers(0, 8), u64))
        payload = draw(st.binary(max_size=64))
        return struct.pack("<IIQ", 9, etype, n) + payload
    return struct.pack("<I", vtype) + draw(st.binary(max_size=16))


@st.composite
def tensor_info(draw) -> bytes:
    name = draw(st.binary(max_size=16))
    dims = draw(st.one_of(st.integers(0, 5), u32))
    shape = [draw(u64) for _ in range(min(dims, 6))]
    return (_string(name, draw(st.one_of(st.none(), u64))) + struct.pack("<I", dims)
            + b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", draw(u32), draw(u64)))


@st.composite
def gguf_files(draw) -> bytes:
    """A GGUF-shaped file: real structure, hostile numbers, then maybe cut or flipped."""
    version = draw(st.one_of(st.sampled_from([2, 3]), u32))
    kvs = draw(st.lists(st.tuples(st.binary(max_size=24), kv_value()), max_size=6))
    if draw(st.booleans()):
        kvs.append((b"general.alignment", struct.pack("<I", 4) + struct.pack("<I", draw(u32))))
    tensors = draw(st.lists(tensor_info(), max_size=4))
    n_kv = draw(st.one_of(st.just(len(kvs)), u64))
    n_t = draw(st.one_of(st.just(len(tensors)), u64))
    body = b"GGUF" + struct.pack("<IQQ", version, n_t, n_kv)
    body += b"".join(_string(k) + v for k, v in kvs) + b"".join(tensors)
    body += b"\0" * draw(st.integers(0, 256))
    if draw(st.booleans()) and body:
        body = body[: draw(st.integers(0, len(body)))]
    if draw(st.booleans()) and body:
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1:]
    return body


def _read_bounded(data: bytes, **kw) -> None:
    tracemalloc.start()
    try:
        try:
            gguf_info.read(io.BytesIO(data), **kw)
        except gguf_info.GGUFError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CEILING, f"{peak} bytes traced for a {len(data)}-byte input"


@PROPS
@given(gguf_files(), st.sampled_from([0, 4, -1]))
@example(b"GGUF", 0)  # CVE-2024-39720
@example(b"GGUF" + struct.pack("<IQQ", 3, 2**64 - 1, 2**64 - 1), 0)
@example(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string(b"k") + struct.pack("<IIQ", 9, 8, 64 << 20), -1)
@example(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string(b"general.alignment") + struct.pack("<II", 4, 0), 0)
def test_gguf_reader_is_total_and_bounded(data, max_array):
    _read_bounded(data, max_array=max_array)


@PROPS
@given(st.binary(max_size=512))
def test_gguf_reader_on_arbitrary_bytes(data):
    _read_bounded(data)
    _read_bounded(b"GGUF" + data)


def test_gguf_every_prefix_of_the_tiny_model(tiny_gguf):
    data = tiny_gguf.read_bytes()
    header_end = gguf_info.read(io.BytesIO(data)).data_offset
    # every prefix of the header (and a little past it), then sampled through the tensor data, and
    # one byte short of the whole file
    for n in [*range(0, header_end + 64), *range(header_end + 64, len(data), 997), len(data) - 1]:
        try:
            gguf_info.read(io.BytesIO(data[:n]))
        except gguf_info.GGUFError:
            continue
        raise AssertionError(f"a {n}-byte prefix of a {len(data)}-byte model was accepted")


# -- Modelfile -------------------------------------------------------------------------------------------

KEYWORDS = ["FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES", "from", "#"]
modelfile_text = st.lists(
    st.one_of(
        st.builds(lambda k, a: f"{k} {a}", st.sampled_from(KEYWORDS), st.text(max_size=30)),
        st.sampled_from(['"""', '"', "\\", "\n", "\r\n", "\t", " ", "'", "PARAMETER stop \"\"\"a", "\x00", "\ufeff"]),
        st.text(max_size=20),
    ),
    max_size=12,
).map("".join)


@PROPS
@given(st.one_of(modelfile_text, st.binary(max_size=200)))
def test_modelfile_parser_is_total(text):
    try:
        parsed = mf.parse(text)
    except mf.ModelfileError:
        return
    # what parses formats to text that parses back to the same commands
    assert mf.parse(mf.format(parsed)) == parsed


# -- names -----------------------------------------------------------------------------------------------

name_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["a", "B", "0", "_", "-", ".", "..", ":", "/", "\\", "@", "sha256:" + "a" * 64,
                              "http://", "%2e", "\x00", " ", "é", "~", "registry.ollama.ai"]), max_size=14).map("".join),
)


@PROPS
@given(name_text)
def test_valid_names_always_map_to_four_plain_path_parts(s):
    name = parse_name(s)  # total: never raises
    assert isinstance(name, Name)
    if not name.is_valid():
        return
    parts = name.filepath().split("/")
    assert len(parts) == 4
    for part in parts:
        assert part and part not in (".", "..") and "\\" not in part and "\x00" not in part
        assert not part.startswith(".") and part == part.strip()
    root = PurePosixPath("/models/manifests")
    joined = os.path.normpath(root.joinpath(*parts))
    assert joined.startswith(str(root) + "/") and joined.count("/") == str(root).count("/") + 4
    again = parse_name(str(name))
    assert again.is_valid() and again.filepath() == name.filepath()
