"""Scratch model names: where `stack test --plan` puts the proposed version of a model.

They live under the host `corral.invalid`: `.invalid` is reserved (RFC 2606) and never
resolves, so no pull, push or real model can ever have such a name. Plan and apply ignore
every model under it (`toolchain.stack.actual`), and a stack may not declare one.
"""

from __future__ import annotations

from toolchain.names import parse_name

SCRATCH_HOST = "corral.invalid"


def is_scratch(name: str) -> bool:
    return parse_name(name).host.casefold() == SCRATCH_HOST


def scratch_name(model: str, run_id: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`corral.invalid/scratch-<run_id>/<model>:<tag>` (a numbered model part if already `taken`)."""
    n = parse_name(model)
    base = n.model.casefold()
    for i in range(1, len(taken) + 2):
        part = base if i == 1 else f"{base}-{i}"
        name = f"{SCRATCH_HOST}/scratch-{run_id}/{part}:{n.tag}"
        if name not in taken:
            return name
    raise AssertionError("unreachable: one of len(taken)+1 candidates is free")


STALE_AFTER = 24 * 3600.0  # seconds: no `stack test --plan` runs this long


def stale(tags: list[dict], now: float, older_than: float = STALE_AFTER) -> list[str]:
    """Scratch models of `/api/tags` modified more than `older_than` seconds before `now` (epoch).

    They are left by a run that was killed outright (SIGKILL, a lost machine). A model whose
    time cannot be read is kept.
    """
    out = []
    for tag in tags:
        name = tag.get("name") or tag.get("model") or ""
        if not is_scratch(name):
            continue
        when = parse_time(tag.get("modified_at"))
        if when is not None and now - when > older_than:
            out.append(name)
    return out


def parse_time(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as Go writes it (nanoseconds, Z or an offset)."""
    import re
    from datetime import datetime

    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value.strip())
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        base = datetime.fromisoformat(m.group(1) + zone).timestamp()
    except ValueError:
        return None
    return base + (float("0." + m.group(2)) if m.group(2) else 0.0)
