"""The plan: a pure diff between desired and actual model states.

`diff(desired, actual, prune=...)` returns the `Change`s that make the server match the stack:
`create` (built model missing), `pull` (pulled model missing or at another digest), `update`
(the model's Modelfile content differs), `replace` (its base weights differ), `delete` (on the
server, not in the stack, prune on) and `no-op`. Changes come in apply order: bases before the
models built from them, deletes last. Comparison is semantic: parameters as typed values (floats
at the float32 precision servers store; `stop` as a set, its order carries no meaning), template,
system and license as exact text, messages in order, adapters and base by digest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Sequence

from toolchain.errors import CorralError
from toolchain.stack.state import DesiredModel, ModelState, ParamValue

Action = Literal["create", "pull", "update", "replace", "delete", "no-op"]
ACTIONS: tuple[Action, ...] = ("create", "pull", "update", "replace", "delete", "no-op")


@dataclass(frozen=True)
class FieldChange:
    """One semantic difference inside a model."""

    field: Literal["base", "template", "system", "parameter", "message", "license", "adapter", "digest"]
    before: Any
    after: Any
    name: Optional[str] = None  # the parameter name for field == "parameter"


@dataclass(frozen=True)
class Change:
    model: str  # display name
    action: Action
    reason: str
    fields: tuple[FieldChange, ...] = ()
    desired: Optional[DesiredModel] = None
    before_digest: Optional[str] = None  # the server's manifest digest before the change


@dataclass(frozen=True)
class Plan:
    """What one target needs."""

    target: str
    url: str
    changes: tuple[Change, ...]
    unmanaged: tuple[str, ...] = ()  # on the server, not in the stack, kept because prune is off
    fingerprint: str = ""  # of the server state the plan was made against
    prune: bool = False

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != "no-op")

    def counts(self) -> dict[str, int]:
        return {a: sum(1 for c in self.changes if c.action == a) for a in ACTIONS}


def diff(
    desired: Mapping[str, DesiredModel],
    actual: Mapping[str, ModelState],
    *,
    prune: bool = False,
    exact: bool = False,
) -> tuple[tuple[Change, ...], tuple[str, ...]]:
    """Changes (in apply order) and unmanaged model names.

    Keys of both mappings are case-folded model names. `exact=True` compares every field,
    set or not (used between two versions of a stack, where both sides are fully known).
    """
    changes: dict[str, Change] = {}
    for key, want in desired.items():
        changes[key] = _change(want, actual.get(key), exact)
    ordered = [changes[k] for k in _apply_order(desired)]
    extra = [actual[k] for k in sorted(actual) if k not in desired]
    deletes = [Change(m.name, "delete", "not in the stack, prune is on", before_digest=m.digest) for m in extra] if prune else []
    unmanaged = () if prune else tuple(m.name for m in extra)
    return tuple(ordered + deletes), unmanaged


def _change(want: DesiredModel, have: Optional[ModelState], exact: bool) -> Change:
    name = want.state.name
    if want.kind == "pull":
        if have is None:
            return Change(name, "pull", "not on the server", desired=want)
        if want.pin and _digest(have.digest) != _digest(want.pin):
            fields = (FieldChange("digest", have.digest, want.pin),)
            return Change(name, "pull", "the pinned digest differs", fields, want, have.digest)
        return Change(name, "no-op", "up to date", desired=want, before_digest=have.digest)
    if have is None:
        return Change(name, "create", "not on the server", desired=want)
    fields = compare(want.state, have, exact)
    if any(f.field == "base" for f in fields):
        return Change(name, "replace", "the base model differs", fields, want, have.digest)
    if fields:
        return Change(name, "update", _update_reason(want, fields), fields, want, have.digest)
    return Change(name, "no-op", "up to date", desired=want, before_digest=have.digest)


def _update_reason(want: DesiredModel, fields: tuple[FieldChange, ...]) -> str:
    """Why a model changes: its own Modelfile, or only what it inherits from its base."""
    if want.own is not None:
        keys = {f"parameter:{f.name}" if f.field == "parameter" else ("adapters" if f.field == "adapter" else f.field) for f in fields}
        if not keys & want.own:
            return f"inherits changes from {want.state.base_ref}"
    return "the Modelfile differs"


def compare(want: ModelState, have: ModelState, exact: bool = False) -> tuple[FieldChange, ...]:
    """The semantic differences that would turn `have` into `want`."""
    out: list[FieldChange] = []
    strict = exact or want.complete
    if want.base != have.base and (exact or (want.base is not None and have.base is not None)):
        out.append(FieldChange("base", have.base, want.base))
    if want.template is not None or exact:
        if (want.template or "") != (have.template or ""):
            out.append(FieldChange("template", have.template, want.template))
    for fieldname in ("system", "license"):
        w, h = getattr(want, fieldname), getattr(have, fieldname)
        if (w is not None or strict) and (w or "") != (h or ""):
            out.append(FieldChange(fieldname, h, w))  # type: ignore[arg-type]
    names = sorted(set(want.parameters) | (set(have.parameters) if strict else set()))
    for name in names:
        w, h = want.parameters.get(name), have.parameters.get(name)
        if not same_parameter(w, h):
            out.append(FieldChange("parameter", h, w, name))
    w_msgs, h_msgs = want.messages or (), have.messages or ()
    if (want.messages is not None or strict) and tuple(w_msgs) != tuple(h_msgs):
        out.append(FieldChange("message", tuple(h_msgs), tuple(w_msgs)))
    if (want.adapters or strict) and tuple(want.adapters) != tuple(have.adapters):
        out.append(FieldChange("adapter", tuple(have.adapters), tuple(want.adapters)))
    return tuple(out)


def same_parameter(a: Optional[ParamValue], b: Optional[ParamValue]) -> bool:
    """Typed equality of two PARAMETER values as a server stores them."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        as_set = lambda v: frozenset(v if isinstance(v, (list, tuple)) else (v,))  # noqa: E731
        return as_set(a) == as_set(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return _f32(a) == _f32(b)
    return a == b


def _f32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:
        return repr(value).encode()


def _digest(value: Optional[str]) -> str:
    value = (value or "").lower()
    return value if value.startswith("sha256:") else f"sha256:{value}"


def _apply_order(desired: Mapping[str, DesiredModel]) -> list[str]:
    """Keys so that every model comes after the stack models it is built from."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str, chain: tuple[str, ...]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            names = " -> ".join(desired[k].state.name for k in chain + (key,))
            raise CorralError(f"models are built from each other in a cycle: {names}")
        state[key] = 1
        for dep in desired[key].after:
            if dep in desired and dep != key:
                visit(dep, chain + (key,))
        state[key] = 2
        order.append(key)

    for key in sorted(desired, key=lambda k: desired[k].state.name):
        visit(key, ())
    return order


def summary_counts(plans: Sequence[Plan]) -> dict[str, int]:
    total = {a: 0 for a in ACTIONS}
    for plan in plans:
        for action, n in plan.counts().items():
            total[action] += n
    return total
