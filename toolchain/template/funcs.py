"""The functions a template can call: Go's builtins plus the ones Ollama registers.

Each function takes already-evaluated arguments (Python values standing for Go values, see
`gofmt`) and returns a value or raises `GoError`. `and` and `or` short-circuit, so the executor
evaluates their arguments itself; they are listed here for the parser and for arity checks.
"""

from __future__ import annotations

import datetime as dt
import html as _html
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from toolchain.template.gofmt import GoError, format_value, kind, marshal_json, sprint, sprintf, sprintln, type_name


def truth(v: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, slices and maps are false."""
    k = kind(v)
    if k == "nil":
        return False
    if k in ("bool", "int", "float"):
        return bool(v)
    if k in ("string", "slice", "map"):
        return len(v) > 0
    custom = getattr(v, "__go_truth__", None)
    return bool(custom()) if custom is not None else True


# -- comparison -----------------------------------------------------------------------------------

_BASIC = {"bool", "int", "float", "string"}


def _basic(v: Any) -> str:
    k = kind(v)
    return k if k in _BASIC or k == "nil" else "other"


def eq(arg1: Any, *others: Any) -> bool:
    if not others:
        raise GoError("missing argument for comparison")
    k1 = _basic(arg1)
    for arg in others:
        k2 = _basic(arg)
        if k1 != k2:
            if k1 != "nil" and k2 != "nil":
                raise GoError("incompatible types for comparison")
            continue
        if k1 == "nil":
            return True
        if k1 == "other":
            raise GoError(f"non-comparable type {format_value(arg1)}: {type_name(arg1)}")
        if arg1 == arg:
            return True
    return False


def ne(arg1: Any, arg2: Any) -> bool:
    return not eq(arg1, arg2)


def _ordered(a: Any, b: Any) -> None:
    ka, kb = _basic(a), _basic(b)
    if ka not in ("int", "float", "string") or kb not in ("int", "float", "string"):
        raise GoError("invalid type for comparison")
    if ka != kb:
        raise GoError("incompatible types for comparison")


def lt(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a < b


def le(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a <= b


def gt(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a > b


def ge(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a >= b


# -- containers -----------------------------------------------------------------------------------


def length(item: Any) -> int:
    k = kind(item)
    if k == "string":
        return len(item.encode("utf-8", "surrogatepass"))
    if k in ("slice", "map"):
        return len(item)
    if k == "nil":
        raise GoError("len of nil pointer")
    raise GoError(f"len of type {type_name(item)}")


def _int_index(x: Any, what: str) -> int:
    if kind(x) != "int":
        raise GoError(f"cannot index {what} with type {type_name(x)}")
    return x


def index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise GoError("index of untyped nil")
    for ix in indexes:
        k = kind(item)
        if k == "nil":
            raise GoError("index of nil pointer")
        if k == "string":
            data = item.encode()
            i = _int_index(ix, "slice/array")
            if not 0 <= i < len(data):
                raise GoError(f"index out of range: {i}")
            item = data[i]
        elif k == "slice":
            i = _int_index(ix, "slice/array")
            if not 0 <= i < len(item):
                raise GoError(f"index out of range: {i}")
            item = item[i]
        elif k == "map":
            item = item.get(ix) if not isinstance(ix, (list, dict)) else None
        else:
            raise GoError(f"can't index item of type {type_name(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise GoError("slice of untyped nil")
    if len(indexes) > 3:
        raise GoError(f"too many slice indexes: {len(indexes)}")
    k = kind(item)
    if k == "string":
        if len(indexes) == 3:
            raise GoError("cannot 3-index slice a string")
        seq: Any = item.encode()
    elif k == "slice":
        seq = item
    else:
        raise GoError(f"can't slice item of type {type_name(item)}")
    bounds = [_int_index(i, "slice") for i in indexes]
    cap = len(seq)
    for b in bounds:
        if not 0 <= b <= cap:
            raise GoError(f"index out of range: {b}")
    lo = bounds[0] if bounds else 0
    hi = bounds[1] if len(bounds) > 1 else len(seq)
    if lo > hi:
        raise GoError(f"invalid slice index: {lo} > {hi}")
    if len(bounds) == 3 and hi > bounds[2]:
        raise GoError(f"invalid slice index: {hi} > {bounds[2]}")
    part = seq[lo:hi]
    if k == "string":
        return part.decode("utf-8", "replace")
    return list(part)


# -- text -----------------------------------------------------------------------------------------


def _args_text(args: tuple) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(args)


def html_escape(*args: Any) -> str:
    s = _args_text(args)
    return _html.escape(s, quote=False).replace('"', "&#34;").replace("'", "&#39;").replace("\0", "\ufffd")


def js_escape(*args: Any) -> str:
    out = []
    for c in _args_text(args):
        if c == "\\":
            out.append("\\\\")
        elif c in "'\"":
            out.append("\\" + c)
        elif c in "<>&=":
            out.append(f"\\u{ord(c):04X}")
        elif ord(c) < 0x20 or not c.isprintable() and c != " ":
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_args_text(args), safe="")


def printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise GoError(f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, args)


# -- Ollama's functions ---------------------------------------------------------------------------


def json_(v: Any) -> str:
    try:
        return marshal_json(v)
    except GoError:
        return ""  # Ollama ignores the marshalling error and prints nothing


def _typescript(type_: str) -> str:
    return {
        "string": "string",
        "number": "number",
        "integer": "number",
        "boolean": "boolean",
        "array": "any[]",
        "object": "Record<string, any>",
        "null": "null",
    }.get(type_, "any")


def typescript_type(prop: Any) -> str:
    """Ollama's toTypeScriptType over a tool property (`AnyOf`, `Type` fields); else "any"."""
    if not hasattr(prop, "AnyOf") or not hasattr(prop, "Type"):
        return "any"
    if prop.AnyOf:
        return " | ".join(typescript_type(p) for p in prop.AnyOf)
    types = list(prop.Type or [])
    if not types:
        return "any"
    return " | ".join(_typescript(t) for t in types)


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Func:
    fn: Optional[Callable[..., Any]]
    min_args: int
    max_args: Optional[int]  # None: variadic
    string_args: bool = False  # every argument must be a string (Go `...string`)


def _date_func(days_back: int) -> Func:
    # the executor calls date functions with its clock; see `Executor.call`
    return Func(None, 0, None, string_args=True)


BUILTINS: dict[str, Func] = {
    "and": Func(None, 1, None),
    "or": Func(None, 1, None),
    "not": Func(lambda v: not truth(v), 1, 1),
    "len": Func(length, 1, 1),
    "index": Func(index, 1, None),
    "slice": Func(slice_, 1, None),
    "print": Func(lambda *a: sprint(a), 0, None),
    "printf": Func(printf, 1, None),
    "println": Func(lambda *a: sprintln(a), 0, None),
    "html": Func(html_escape, 0, None),
    "js": Func(js_escape, 0, None),
    "urlquery": Func(urlquery, 0, None),
    "eq": Func(eq, 1, None),
    "ne": Func(ne, 2, 2),
    "lt": Func(lt, 2, 2),
    "le": Func(le, 2, 2),
    "gt": Func(gt, 2, 2),
    "ge": Func(ge, 2, 2),
    # Ollama's template.funcs
    "json": Func(json_, 1, 1),
    "currentDate": _date_func(0),
    "yesterdayDate": _date_func(1),
    "toTypeScriptType": Func(typescript_type, 1, 1),
}

DATE_OFFSETS = {"currentDate": 0, "yesterdayDate": 1}


def date_string(now: dt.datetime, days_back: int) -> str:
    """Ollama's date functions ignore their format argument and print YYYY-MM-DD."""
    return (now - dt.timedelta(days=days_back)).strftime("%Y-%m-%d")


__all__ = ["BUILTINS", "DATE_OFFSETS", "Func", "date_string", "truth", "format_value"]
