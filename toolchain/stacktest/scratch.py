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
