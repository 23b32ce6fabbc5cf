"""How Go prints and marshals values: fmt's %v and printf verbs, and encoding/json.

Python values stand for Go values: None is nil, bool/int/float/str the basic kinds, list/tuple
a slice, dict a map (printed and marshalled in sorted key order, as Go does), a dataclass a
struct. A value may carry Go methods: `__go_str__()` (a Stringer, used when printing),
`__go_json__()` (a json.Marshaler: the value to marshal instead) and a `__go_type__` name.
`OrderedMap` is a dict whose JSON keeps insertion order (Ollama's ordered maps).
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from decimal import Decimal
from typing import Any, Sequence


class OrderedMap(dict):
    """A map whose JSON form keeps insertion order instead of Go's sorted keys."""


class GoError(Exception):
    """A Go function failed; the executor turns it into a `TemplateError` with a position."""


# -- kinds and type names -----------------------------------------------------------------------


def kind(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "slice"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, (bytes, bytearray)):
        return "slice"
    return "struct"


def type_name(v: Any) -> str:
    name = getattr(type(v), "__go_type__", None)
    if name:
        return name
    return {
        "nil": "<nil>",
        "bool": "bool",
        "int": "int",
        "float": "float64",
        "string": "string",
        "slice": "[]uint8" if isinstance(v, (bytes, bytearray)) else "[]interface {}",
        "map": "map[string]interface {}",
    }.get(kind(v), type(v).__name__)


def sorted_keys(m: dict) -> list:
    try:
        return sorted(m)
    except TypeError:
        return sorted(m, key=lambda k: (type(k).__name__, str(k)))


# -- numbers ------------------------------------------------------------------------------------


def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(f) (non-zero) and the decimal point position:
    abs(f) == 0.DIGITS * 10**dp."""
    _, digits, exp = Decimal(repr(abs(f))).normalize().as_tuple()
    ds = "".join(map(str, digits))
    return ds, len(ds) + int(exp)


def _exp_form(ds: str, dp: int, upper: bool = False) -> str:
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    e = dp - 1
    return f"{mant}{'E' if upper else 'e'}{'-' if e < 0 else '+'}{abs(e):02d}"


def _fixed_form(ds: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * (-dp) + ds
    if dp >= len(ds):
        return ds + "0" * (dp - len(ds))
    return ds[:dp] + "." + ds[dp:]


def format_float_g(f: float, upper: bool = False) -> str:
    """Go's strconv.FormatFloat(f, 'g', -1, 64), which is what %v prints for a float64."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0"
    ds, dp = _digits(f)
    exp = dp - 1
    if exp < -4 or exp >= 6:  # the shortest form decides with precision 6, like Go
        body = _exp_form(ds, dp, upper)
    else:
        body = _fixed_form(ds, dp)
    return sign + body


def format_float_json(f: float) -> str:
    """encoding/json's float64 form."""
    if math.isnan(f) or math.isinf(f):
        raise GoError(f"json: unsupported value: {format_float_g(f)}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    ds, dp = _digits(f)
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        e = dp - 1
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{sign}{mant}e{'-' if e < 0 else '+'}{abs(e)}"
    return sign + _fixed_form(ds, dp)


# -- %v -------------------------------------------------------------------------------------------


def format_value(v: Any, plus: bool = False) -> str:
    """fmt's %v (with plus: %+v, struct field names shown)."""
    stringer = getattr(v, "__go_str__", None)
    if stringer is not None:
        return stringer()
    k = kind(v)
    if k == "nil":
        return "<nil>"
    if k == "bool":
        return "true" if v else "false"
    if k == "int":
        return str(v)
    if k == "float":
        return format_float_g(v)
    if k == "string":
        return v
    if k == "slice":
        return "[" + " ".join(format_value(x, plus) for x in v) + "]"
    if k == "map":
        return "map[" + " ".join(f"{format_value(key, plus)}:{format_value(v[key], plus)}" for key in sorted_keys(v)) + "]"
    if dataclasses.is_dataclass(v):
        parts = []
        for f in dataclasses.fields(v):
            text = format_value(getattr(v, f.name), plus)
            parts.append(f"{f.name}:{text}" if plus else text)
        return "{" + " ".join(parts) + "}"
    return str(v)


# -- printf ---------------------------------------------------------------------------------------

_MAX_WIDTH = 1_000_000  # Go's fmt refuses larger widths and precisions
_SPEC = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d+)?)?(.)", re.S)


def _quote(s: str) -> str:
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[c])
        elif c.isprintable() or c == " ":
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


def _bad(verb: str, v: Any) -> str:
    if v is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(v)}={format_value(v)})"


def _int_verb(verb: str, v: int, flags: str, prec: int | None) -> str:
    sign = "-" if v < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
    a = abs(v)
    if verb == "d":
        body = str(a)
    elif verb in "xX":
        body = format(a, "x" if verb == "x" else "X")
        if "#" in flags:
            body = ("0x" if verb == "x" else "0X") + body
    elif verb == "o":
        body = format(a, "o")
        if "#" in flags:
            body = "0" + body
    elif verb == "O":
        body = "0o" + format(a, "o")
    elif verb == "b":
        body = format(a, "b")
    else:
        raise AssertionError(verb)
    if prec is not None:
        body = body.zfill(prec) if not (prec == 0 and a == 0) else ""
    return sign + body


def _float_verb(verb: str, v: float, flags: str, prec: int | None) -> str:
    if math.isnan(v) or math.isinf(v):
        body = "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
        if v > 0 and "+" not in flags and not math.isnan(v):
            body = "Inf" if " " not in flags else " Inf"
        return body
    sign = "-" if math.copysign(1.0, v) < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
    a = abs(v)
    if verb in "fF":
        body = f"{a:.{6 if prec is None else prec}f}"
    elif verb in "eE":
        body = f"{a:.{6 if prec is None else prec}e}"
        if verb == "E":
            body = body.upper()
    else:  # g G
        if prec is None:
            body = format_float_g(a, upper=verb == "G")
        else:
            body = f"{a:.{prec or 1}g}"
            if verb == "G":
                body = body.upper()
    return sign + body


def _format_one(verb: str, flags: str, prec: int | None, v: Any) -> str:
    k = kind(v)
    if verb == "T":
        return type_name(v)
    if verb == "v":
        if k == "float" and prec is not None:
            return _float_verb("g", v, flags, prec)
        if k in ("int", "float") and ("+" in flags or " " in flags):
            return _int_verb("d", v, flags, None) if k == "int" else _float_verb("g", v, flags, None)
        return format_value(v, plus="+" in flags)
    if verb == "s":
        if hasattr(v, "__go_str__") or k == "string":
            s = format_value(v)
            return s[:prec] if prec is not None else s
        if k == "slice" and all(isinstance(x, str) or hasattr(x, "__go_str__") for x in v):
            return format_value(v)
        if k in ("map", "struct"):
            return format_value(v)
        return _bad(verb, v)
    if verb == "q":
        if k == "string" or hasattr(v, "__go_str__"):
            return _quote(format_value(v))
        if k == "int":
            return "'" + _quote(chr(v))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        if k == "slice" and all(isinstance(x, str) for x in v):
            return "[" + " ".join(_quote(x) for x in v) + "]"
        return _bad(verb, v)
    if verb == "t":
        return ("true" if v else "false") if k == "bool" else _bad(verb, v)
    if verb in "dbo0xXO":
        if k == "int":
            return _int_verb(verb, v, flags, prec)
        if k == "slice" and all(kind(x) == "int" for x in v):
            return "[" + " ".join(_int_verb(verb, x, flags, prec) for x in v) + "]"
        if verb in "xX" and k == "string":
            return v.encode().hex() if verb == "x" else v.encode().hex().upper()
        return _bad(verb, v)
    if verb == "c":
        if k != "int":
            return _bad(verb, v)
        return chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd"
    if verb == "U":
        return f"U+{v:04X}" if k == "int" and v >= 0 else _bad(verb, v)
    if verb in "eEfFgG":
        if k == "float":
            return _float_verb(verb, v, flags, prec)
        if k == "int":
            return _bad(verb, v)
        return _bad(verb, v)
    return _bad(verb, v)


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    """Go's fmt.Sprintf for the common verbs, with Go's %!verb(...) markers for mistakes."""
    out: list[str] = []
    argi = 0
    i = 0
    while i < len(fmt):
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        m = _SPEC.match(fmt, j)
        if m is None:
            out.append("%!(NOVERB)")
            break
        flags, width_s, prec_s, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        i = m.end()
        if verb == "%":
            out.append("%")
            continue
        width = None
        if width_s == "*":
            if argi < len(args) and kind(args[argi]) == "int" and abs(args[argi]) <= _MAX_WIDTH:
                width = args[argi]
                if width < 0:
                    flags += "-"
                    width = -width
            else:
                out.append("%!(BADWIDTH)")
            argi += 1
        elif width_s:
            width = int(width_s)
            if width > _MAX_WIDTH:
                out.append("%!(BADWIDTH)")
                width = None
        prec = None
        if m.group(0).find(".") >= 0 and prec_s is None:
            prec = 0
        if prec_s == "*":
            if argi < len(args) and kind(args[argi]) == "int" and args[argi] <= _MAX_WIDTH:
                prec = max(0, args[argi])
            else:
                out.append("%!(BADPREC)")
            argi += 1
        elif prec_s:
            prec = int(prec_s)
            if prec > _MAX_WIDTH:
                out.append("%!(BADPREC)")
                prec = None
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        text = _format_one(verb, flags, prec, args[argi])
        argi += 1
        if width is not None and len(text) < width:
            pad = width - len(text)
            if "-" in flags:
                text = text + " " * pad
            elif "0" in flags and verb not in "sqvT" and text[:1] in "+- " and kind(args[argi - 1]) in ("int", "float"):
                text = text[0] + "0" * pad + text[1:]
            elif "0" in flags and kind(args[argi - 1]) in ("int", "float", "string"):
                text = "0" * pad + text
            else:
                text = " " * pad + text
        out.append(text)
    if argi < len(args):
        extra = ", ".join("<nil>" if a is None else f"{type_name(a)}={format_value(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def sprint(args: Sequence[Any]) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(format_value(a))
    return "".join(out)


def sprintln(args: Sequence[Any]) -> str:
    return " ".join(format_value(a) for a in args) + "\n"


# -- encoding/json --------------------------------------------------------------------------------

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def json_string(s: str) -> str:
    out = ['"']
    for c in s:
        o = ord(c)
        if c in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[c])
        elif o < 0x20 or c in "<>&" or o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def marshal_json(v: Any) -> str:
    """Go's json.Marshal: compact, map keys sorted, <>& escaped as \\u003c..."""
    custom = getattr(v, "__go_json__", None)
    if custom is not None:
        return marshal_json(custom())
    k = kind(v)
    if k == "nil":
        return "null"
    if k == "bool":
        return "true" if v else "false"
    if k == "int":
        return str(v)
    if k == "float":
        return format_float_json(v)
    if k == "string":
        return json_string(v)
    if isinstance(v, (bytes, bytearray)):
        return json_string(base64.b64encode(bytes(v)).decode())
    if k == "slice":
        return "[" + ",".join(marshal_json(x) for x in v) + "]"
    if k == "map":
        keys = list(v) if isinstance(v, OrderedMap) else sorted_keys(v)
        return "{" + ",".join(f"{json_string(str(key))}:{marshal_json(v[key])}" for key in keys) + "}"
    if dataclasses.is_dataclass(v):
        return "{" + ",".join(f"{json_string(f.name)}:{marshal_json(getattr(v, f.name))}" for f in dataclasses.fields(v)) + "}"
    raise GoError(f"json: unsupported type: {type_name(v)}")
