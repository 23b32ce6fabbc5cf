"""Durations the way Ollama reads and writes them: Go duration strings and ``keep_alive``.

* ``parse_go_duration("1h30m")`` -> seconds, Go's ``time.ParseDuration`` grammar
  (units ns, us, µs, μs, ms, s, m, h; fractions; a sign; ``"0"`` alone needs no
  unit) with Go's error texts (``time: missing unit in duration "300"``).
* ``parse_keep_alive(value)`` -> seconds, ``math.inf`` for "forever", or None when
  absent: a JSON number is seconds (negative = forever), a string a Go duration
  (negative = forever), anything else ``Unsupported type: '<go type>'``.
* ``keep_alive_from_env(text)`` -> seconds for ``OLLAMA_KEEP_ALIVE`` (a Go
  duration or whole seconds; invalid or empty -> 5 minutes; negative = forever).
* ``format_go_duration(seconds)`` -> Go's ``Duration.String`` (``"5m0s"``).
"""

from __future__ import annotations

import math
from typing import Any

from toolchain.errors import CorralError

__all__ = [
    "DEFAULT_KEEP_ALIVE",
    "FOREVER",
    "DurationError",
    "format_go_duration",
    "keep_alive_from_env",
    "parse_go_duration",
    "parse_keep_alive",
]

FOREVER = math.inf
DEFAULT_KEEP_ALIVE = 300.0  # seconds (Ollama: 5 * time.Minute)

_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µs (micro sign)
    "\u03bcs": 1_000,  # μs (Greek mu)
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds


class DurationError(CorralError, ValueError):
    """A duration Go would not parse; ``str`` is Go's message."""


def _go_quote(s: str) -> str:
    """Go's ``time.quote``: ASCII kept (``"`` and ``\\`` escaped), other bytes as ``\\xHH``."""
    out = ['"']
    for c in s:
        if ord(c) >= 0x80 or ord(c) < 0x20:
            out.extend(f"\\x{b:02x}" for b in c.encode("utf-8"))
        else:
            out.append("\\" + c if c in '"\\' else c)
    out.append('"')
    return "".join(out)


def _parse_ns(text: str) -> int:
    """``time.ParseDuration`` in integer nanoseconds."""
    invalid = DurationError(f"time: invalid duration {_go_quote(text)}")
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise invalid
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        whole_digits, s = s[:i], s[i:]
        whole = int(whole_digits) if whole_digits else 0
        if whole > 2**63:
            raise invalid
        frac_digits = ""
        had_dot = s.startswith(".")
        if had_dot:
            s = s[1:]
            j = 0
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            frac_digits, s = s[:j], s[j:]
        if not whole_digits and not frac_digits:
            raise invalid
        k = 0
        while k < len(s) and not (s[k] == "." or "0" <= s[k] <= "9"):
            k += 1
        if k == 0:
            raise DurationError(f"time: missing unit in duration {_go_quote(text)}")
        unit_name, s = s[:k], s[k:]
        unit = _NS.get(unit_name)
        if unit is None:
            raise DurationError(f"time: unknown unit {_go_quote(unit_name)} in duration {_go_quote(text)}")
        value = whole * unit
        if frac_digits:
            # Go keeps at most ~18 fraction digits and adds them as a float, truncated
            f = int(frac_digits[:18])
            value += int(f * (unit / 10 ** len(frac_digits[:18])))
        total += value
        if total > 2**63:
            raise invalid
    if total > _MAX_NS and not (negative and total == 2**63):
        raise invalid
    return -total if negative else total


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; raises DurationError with Go's message."""
    return _parse_ns(text) / 1e9


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def parse_keep_alive(value: Any) -> float | None:
    """A request's ``keep_alive`` in seconds (``FOREVER`` = never unload; None = not given).

    Raises DurationError: Go's parse error for a bad string, or
    ``Unsupported type: 'bool'`` (etc.) for other JSON types.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or value * 1e9 >= 2**63:
            return FOREVER
        return float(value)
    if isinstance(value, str):
        ns = _parse_ns(value)
        return FOREVER if ns < 0 else ns / 1e9
    raise DurationError(f"Unsupported type: '{_go_type(value)}'")


def keep_alive_from_env(text: str | None) -> float:
    """``OLLAMA_KEEP_ALIVE``: a Go duration or whole seconds; anything else -> 5 minutes."""
    text = (text or "").strip().strip("\"'")
    if not text:
        return DEFAULT_KEEP_ALIVE
    try:
        ns = _parse_ns(text)
    except DurationError:
        try:
            ns = int(text, 10) * 1_000_000_000 if text.lstrip("+-").isdigit() else None
        except ValueError:
            ns = None
        if ns is None:
            return DEFAULT_KEEP_ALIVE
    return FOREVER if ns < 0 else ns / 1e9


def format_go_duration(seconds: float) -> str:
    """Go's ``Duration.String`` for ``seconds`` (``300`` -> ``"5m0s"``, ``0.0015`` -> ``"1.5ms"``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _fraction(rest, 1_000_000_000) + "s"


def _fraction(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    if not frac:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
