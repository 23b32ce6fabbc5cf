"""Go literal syntax: quoted strings, raw strings, character constants and numbers."""

from __future__ import annotations

import re
from typing import Callable, Union

from toolchain.template.errors import quote

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_OCTAL_INT = re.compile(r"[+-]?0[0-7_]+")

Fail = Callable[[str], Exception]


def unquote(text: str, fail: Fail) -> str:
    """The value of a Go string literal ("..." with escapes, `...` raw, or '.' as a char)."""
    if text.startswith("`"):
        return text[1:-1].replace("\r", "")
    quote = text[0]
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            if c == quote:
                raise fail(f"invalid syntax in {text}")
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise fail(f"invalid syntax in {text}")
        e = body[i]
        i += 1
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
        elif e == quote:
            out.append(e)
        elif e in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i : i + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise fail(f"invalid escape in {text}")
            i += size
            code = int(digits, 16)
            if e == "x":
                out.append(chr(code))  # Go would insert the raw byte; a code point is the closest text
            else:
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise fail(f"invalid escape in {text}")
                out.append(chr(code))
        elif e in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise fail(f"invalid escape in {text}")
            i += 2
            out.append(chr(int(digits, 8)))
        else:
            raise fail(f"invalid escape \\{e} in {text}")
    value = "".join(out)
    if quote == "'" and len(value) != 1:
        raise fail(f"malformed character constant: {text}")
    return value


def parse_number(text: str, is_char: bool, fail: Fail) -> Union[int, float]:
    """An int when the constant is integral in Go's eyes (no '.', exponent), else a float."""
    if is_char:
        return ord(unquote(text, fail))
    if text.endswith("i"):
        raise fail(f"complex constants are not supported: {text}")
    lowered = text.lower()
    try:
        is_hex = lowered.lstrip("+-").startswith("0x")
        if (is_hex and "p" in lowered) or (not is_hex and any(c in lowered for c in ".e")):
            if is_hex:
                sign = -1.0 if lowered.startswith("-") else 1.0
                return sign * float.fromhex(lowered.lstrip("+-").replace("_", ""))
            return float(lowered.replace("_", ""))
        if _OCTAL_INT.fullmatch(text):
            sign = -1 if text.startswith("-") else 1
            return sign * int(text.lstrip("+-").replace("_", ""), 8)
        return int(text, 0)
    except ValueError:
        raise fail(f"bad number syntax: {quote(text)}") from None
