"""JSON encoded byte-for-byte like Go's `json.NewEncoder(w).Encode(v)`, so blobs hash like Ollama's.

Ollama writes manifests, the config blob, params and messages with Go's encoder: compact, object
keys in the order given (Go structs keep field order; Go maps are sorted — pass `sort_keys=True`
for map-like values or build them sorted), `<`, `>`, `&`, U+2028 and U+2029 escaped, floats in Go's
shortest form (`1` for 1.0, `1e-7`, `1e+21`), and a trailing newline.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
            "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def encode(value: Any, *, sort_keys: bool = False) -> bytes:
    """Go's `Encoder.Encode`: the compact encoding plus a trailing newline, as UTF-8."""
    return (dumps(value, sort_keys=sort_keys) + "\n").encode("utf-8")


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    parts: list[str] = []
    _write(value, parts, sort_keys)
    return "".join(parts)


def _write(v: Any, out: list[str], sort_keys: bool) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(format_float(v))
    elif isinstance(v, str):
        out.append(quote(v))
    elif isinstance(v, dict):
        items = sorted(v.items()) if sort_keys else v.items()
        out.append("{")
        for i, (k, item) in enumerate(items):
            if i:
                out.append(",")
            out.append(quote(str(k)))
            out.append(":")
            _write(item, out, sort_keys)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _write(item, out, sort_keys)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def quote(s: str) -> str:
    chars = []
    for c in s:
        esc = _ESCAPES.get(c)
        if esc is not None:
            chars.append(esc)
        elif c < " ":
            chars.append(f"\\u{ord(c):04x}")
        elif "\ud800" <= c <= "\udfff":  # lone surrogate: Go writes U+FFFD for invalid UTF-8
            chars.append("\ufffd")
        else:
            chars.append(c)
    return '"' + "".join(chars) + '"'


def format_float(x: float) -> str:
    """Go's float64 JSON form: shortest round-trip digits, `%f` style for 1e-6 <= |x| < 1e21."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"unsupported value: {x}")
    a = abs(x)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        mantissa, _, exp = repr(x).partition("e")
        e = int(exp)
        return f"{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}".replace("e-0", "e-")
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_g(x: Any) -> str:
    """Go's `%v` / `%#v` for a JSON-decoded value (numbers are float64: `%g` shortest form)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        x = float(x)
    if isinstance(x, float):
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        if math.isnan(x):
            return "NaN"
        if x == 0:
            return "-0" if math.copysign(1, x) < 0 else "0"
        digits, exp = _shortest(x)
        sign = "-" if x < 0 else ""
        if exp < -4 or exp >= 6:
            m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
            return f"{sign}{m}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
        point = exp + 1
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits))
        return f"{sign}{digits[:point]}.{digits[point:]}"
    return str(x)


def _shortest(x: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |x| and the decimal exponent of the first digit."""
    t = Decimal(repr(abs(x))).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    return digits, len(digits) + int(t.exponent) - 1
