"""`stack test --plan`: the tests of every model a plan changes, on the current model and on the
proposed one, side by side.

Per target: plan the stack; for each model with tests whose change is a create, update or
replace, create the proposed model on the server under a scratch name
(`toolchain.stacktest.scratch`, never a real model's name; bases the plan also changes get a
scratch copy too, and the scratch variant is built FROM it); run every test on the current model
(when the server has it) and on the scratch model with the same options and seed; then remove
the scratch models (unloaded first), always: on success, on failure, on Ctrl-C and on SIGTERM.
Pulled models are not compared (a pull cannot land under another name).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional, Sequence

import httpx

from toolchain.client import Client
from toolchain.errors import APIError, CorralError
from toolchain.stack.apply import perform
from toolchain.stack.plan import Change, Plan
from toolchain.stack.state import key_of
from toolchain.stacktest.collect import Test
from toolchain.stacktest.run import Job, Result, lanes, run
from toolchain.stacktest.scratch import scratch_name, stale

COMPARED = ("create", "update", "replace")
Echo = Callable[[str], None]


@dataclass
class Pair:
    """One test on the model as it is (`before`, None when the server does not have it) and as proposed."""

    test: Test
    action: str  # the plan's action for the model
    before: Optional[Result]
    after: Result

    @property
    def outcome_changed(self) -> bool:
        return self.before is not None and self.before.outcome != self.after.outcome

    @property
    def answer_changed(self) -> bool:
        b, a = self.before, self.after
        if b is None or b.answer is None or a.answer is None:
            return False
        return b.answer.text != a.answer.text


@dataclass
class TargetComparison:
    target: str
    url: str
    pairs: list[Pair] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)  # changed models without tests
    skipped: list[str] = field(default_factory=list)  # changed models that cannot be compared (pulls), with why
    scratch: list[str] = field(default_factory=list)  # scratch models created (and removed)
    swept: list[str] = field(default_factory=list)  # stale scratch models of killed runs, removed first
    leftovers: list[str] = field(default_factory=list)  # scratch models that could not be removed
    error: Optional[str] = None  # the comparison could not finish (scratch creation failed, ...)

    def ordered(self) -> list[Pair]:
        """Changed outcomes first, then changed answers, then the rest (stable within each)."""
        return sorted(self.pairs, key=lambda p: (not p.outcome_changed, not p.answer_changed))


def compare_target(
    plan: Plan,
    tests: Sequence[Test],
    client: Client,
    *,
    parallel: int = 1,
    echo: Echo = lambda s: None,
    run_id: Optional[str] = None,
) -> TargetComparison:
    """Compare the current and proposed versions of `plan`'s changed models on one server."""
    result = TargetComparison(plan.target, plan.url)
    old = stale(client.tags(), time.time())
    if old:  # left by runs that were killed outright (SIGKILL): nothing else removes them
        gone = remove_scratch(client, old)
        result.swept = [n for n in old if n not in gone]
    changes = {c.desired.key: c for c in plan.changes if c.desired is not None}
    changed = {k for k, c in changes.items() if c.action in COMPARED}
    with_tests = {t.key for t in tests}
    for key, c in changes.items():
        if c.action == "pull" and key in with_tests:
            result.skipped.append(f"{c.model} (pulled: a pull cannot be tried under another name)")
        elif key in changed and key not in with_tests:
            result.untested.append(c.model)
    tested = [t for t in tests if t.key in changed]
    if not tested:
        return result
    needed = _with_changed_bases({t.key for t in tested}, changes, changed)
    run_id = run_id or secrets.token_hex(4)
    names: dict[str, str] = {}
    for c in plan.changes:  # apply order: bases first
        if c.desired is not None and c.desired.key in needed:
            names[c.desired.key] = scratch_name(c.model, run_id, set(names.values()))
    with _terminate_as_interrupt():
        try:
            for c in plan.changes:
                key = c.desired.key if c.desired is not None else None
                if key not in names:
                    continue
                result.scratch.append(names[key])  # before creating: a half-made one is removed too
                echo(f"[{plan.target}] creating {names[key]} (proposed {c.model}) ...")
                perform(_scratch_change(c, names), client)
            jobs: list[Job] = []
            for t in tested:
                if changes[t.key].action != "create":
                    jobs.append(Job(t, changes[t.key].model))
                jobs.append(Job(t, names[t.key]))
            echo(f"[{plan.target}] running {len(tested)} test(s) on the current and proposed models ...")
            lane = lanes(client, [j.model for j in jobs])
            results = run(client, [replace(j, lane=lane[j.model]) for j in jobs], parallel)
            by_job = {(id(r.test), r.model): r for r in results}
            for t in tested:
                before = by_job.get((id(t), changes[t.key].model)) if changes[t.key].action != "create" else None
                result.pairs.append(Pair(t, changes[t.key].action, before, by_job[(id(t), names[t.key])]))
        except (CorralError, httpx.HTTPError) as exc:
            result.error = str(exc) or type(exc).__name__
        finally:
            result.leftovers = remove_scratch(client, result.scratch)
    return result


def _with_changed_bases(keys: set[str], changes: dict[str, Change], changed: set[str]) -> set[str]:
    """`keys` plus every changed stack model they are built from (their scratch copies are built on those)."""
    out, todo = set(), list(keys)
    while todo:
        key = todo.pop()
        if key in out:
            continue
        out.add(key)
        desired = changes[key].desired
        todo += [dep for dep in (desired.after if desired else ()) if dep in changed]
    return out


def _scratch_change(change: Change, names: dict[str, str]) -> Change:
    """The change that creates the proposed model under its scratch name (FROM scratch bases)."""
    desired = change.desired
    assert desired is not None and desired.create is not None
    body = dict(desired.create)
    base = body.get("from")
    if isinstance(base, str) and key_of(base) in names:
        body["from"] = names[key_of(base)]
    return Change(names[desired.key], "create", "proposed version for stack test", desired=replace(desired, create=body))


def remove_scratch(client: Client, names: Sequence[str]) -> list[str]:
    """Delete scratch models (variants before their bases); the names that remain.

    A runner the server lists under a scratch name (weights only a scratch model uses) is
    unloaded first; one shared with real models (listed under a real name) is left alone.
    """
    leftovers = []
    with _ignore_interrupts():
        try:
            loaded = {m.get("name") or m.get("model") for m in client.ps()}
        except (CorralError, httpx.HTTPError):
            loaded = set()
        for name in reversed(names):
            if name in loaded:
                with contextlib.suppress(CorralError, httpx.HTTPError):
                    for _ in client.generate({"model": name, "keep_alive": 0}):
                        pass
            try:
                client.delete(name)
            except APIError as exc:
                if exc.status != 404:
                    leftovers.append(name)
            except (CorralError, httpx.HTTPError):
                leftovers.append(name)
    return leftovers


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) raises KeyboardInterrupt, so `finally` blocks clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _ignore_interrupts() -> Iterator[None]:
    """While removing scratch models, a second Ctrl-C / SIGTERM waits for the removal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


_WORD = re.compile(r"\s+|[^\s]+")


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """(op, text) runs turning `before` into `after` word by word: op is "=", "-" or "+"."""
    import difflib

    a, b = _WORD.findall(before), _WORD.findall(after)
    # blocks: ("=", text) or ("~", removed, added); changes separated only by blanks are one change
    blocks: list[tuple[str, ...]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
        if op == "equal":
            blocks.append(("=", "".join(a[i1:i2])))
            continue
        removed, added = "".join(a[i1:i2]), "".join(b[j1:j2])
        if len(blocks) >= 2 and blocks[-2][0] == "~" and blocks[-1][0] == "=" and not blocks[-1][1].strip():
            blank = blocks.pop()[1]
            _, r, d = blocks.pop()
            removed, added = r + blank + removed, d + blank + added
        blocks.append(("~", removed, added))
    out: list[tuple[str, str]] = []
    for block in blocks:
        if block[0] == "=":
            out.append(("=", block[1]))
            continue
        if block[1]:
            out.append(("-", block[1]))
        if block[2]:
            out.append(("+", block[2]))
    return out


def plain_word_diff(before: str, after: str) -> str:
    """git's --word-diff=plain notation: [-removed-]{+added+}."""
    marks = {"=": "{}", "-": "[-{}-]", "+": "{{+{}+}}"}
    return "".join(marks[op].format(text) for op, text in word_diff(before, after))
