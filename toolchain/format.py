"""Ollama's human-readable formats (its `format` package): sizes, counts and times.

`human_bytes` is `format.HumanBytes` (decimal units), `human_number` is `format.HumanNumber` (the
parameter size shown as `8.0B`, `136.73M`), `human_time` is `format.HumanTime` ("2 weeks ago",
"4 minutes from now", "Forever"), `parse_time` reads Go's RFC 3339 timestamps. Pure functions.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone


def human_bytes(n: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            value = n / size
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_number(n: int) -> str:
    if n >= 1_000_000_000:
        v = n / 1_000_000_000
        return f"{v:.0f}B" if v == int(v) else f"{v:.1f}B"
    if n >= 1_000_000:
        v = n / 1_000_000
        return f"{v:.0f}M" if v == int(v) else f"{v:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}K"
    return str(n)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def human_time(when: datetime | str | None, zero: str = "Never", now: datetime | None = None) -> str:
    if when is None or when == "":
        return zero
    if isinstance(when, str):
        when = parse_time(when)
    now = now or datetime.now(timezone.utc)
    delta = (now - when).total_seconds()
    if delta / 3600 // 24 // 365 < -20:
        return "Forever"
    if delta < 0:
        return _duration(-delta) + " from now"
    return _duration(delta) + " ago"


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as Go writes it (nanoseconds allowed, `Z` or an offset)."""
    m = re.fullmatch(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", text.strip())
    if m is None:
        raise ValueError(f"invalid time {text!r}")
    main, frac, zone = m.groups()
    frac = f".{frac[:6].ljust(6, '0')}" if frac else ""
    zone = "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(main + frac + zone)
