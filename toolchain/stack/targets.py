"""Planning a loaded stack against its target servers (the I/O around the pure diff)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional, Sequence

from toolchain.client import Client, base_url
from toolchain.errors import CorralError
from toolchain.stack import actual
from toolchain.stack.desired import build
from toolchain.stack.load import LoadedStack, StackError
from toolchain.stack.plan import Plan, diff
from toolchain.stack.state import DesiredModel


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: Optional[str]

    def client(self, timeout: Optional[float] = None) -> Client:
        return Client(self.url, token=self.token, timeout=timeout)


def targets(loaded: LoadedStack, only: Sequence[str] = ()) -> list[Target]:
    """The stack's targets (or the one at OLLAMA_HOST), narrowed to `only` when given."""
    declared = loaded.stack.targets
    found = [Target(n, base_url(t.url), t.token) for n, t in declared.items()] or [Target("default", base_url(None), None)]
    if not only:
        return found
    names = {t.name for t in found}
    for name in only:
        if name not in names:
            hint = difflib.get_close_matches(name, sorted(names), n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else f"; the stack has: {', '.join(sorted(names))}"
            raise StackError(f"no target named {name!r}{more}", loaded.display)
    return [t for t in found if t.name in only]


def plan_target(desired: dict[str, DesiredModel], target: Target, client: Client, prune: bool) -> Plan:
    show = {k for k, d in desired.items() if d.kind == "create"}
    states, fp = actual.read(client, show)
    changes, unmanaged = diff(desired, states, prune=prune)
    return Plan(target.name, target.url, changes, unmanaged, fp, prune)


def plan_stack(loaded: LoadedStack, only: Sequence[str] = ()) -> list[Plan]:
    """One plan per target. Any unreachable server fails the whole plan (nothing half-planned)."""
    desired = build(loaded)
    plans = []
    for target in targets(loaded, only):
        with target.client() as client:
            try:
                plans.append(plan_target(desired, target, client, loaded.stack.prune))
            except CorralError as exc:
                raise CorralError(f"target {target.name}: {exc}") from exc
    return plans
