"""The pure plan diff, as a table of cases."""

from __future__ import annotations

import pytest

from toolchain.errors import CorralError
from toolchain.stack.plan import Plan, compare, diff, same_parameter
from toolchain.stack.state import DesiredModel, ModelState

BASE_A = "sha256:" + "a" * 64
BASE_B = "sha256:" + "b" * 64
TPL = "{{ .Prompt }}"


def state(name="bot:latest", **kw) -> ModelState:
    kw.setdefault("base", BASE_A)
    kw.setdefault("template", TPL)
    return ModelState(name=name, **kw)


def built(name="bot:latest", after=(), **kw) -> DesiredModel:
    return DesiredModel(key=name.casefold(), state=state(name, **kw), kind="create", create={}, after=after)


def pulled(name="qwen:0.5b", pin=None) -> DesiredModel:
    return DesiredModel(key=name.casefold(), state=ModelState(name=name, digest=pin), kind="pull", pull=name, pin=pin)


def by_key(*models):
    return {m.key if isinstance(m, DesiredModel) else m.name.casefold(): m for m in models}


CASES = [
    # (id, desired, actual, prune, expected [(model, action)], expected unmanaged)
    ("empty", [], [], False, [], []),
    ("create missing", [built()], [], False, [("bot:latest", "create")], []),
    ("identical is no-op", [built(system="hi")], [state(system="hi", digest="sha256:1")], False, [("bot:latest", "no-op")], []),
    ("system differs -> update", [built(system="new")], [state(system="old")], False, [("bot:latest", "update")], []),
    ("base differs -> replace", [built(base=BASE_B)], [state()], False, [("bot:latest", "replace")], []),
    ("names match case-insensitively", [built("Bot:latest")], [state("bot:latest")], False, [("Bot:latest", "no-op")], []),
    ("unmanaged kept without prune", [], [state("stray:latest")], False, [], ["stray:latest"]),
    ("unmanaged deleted with prune", [], [state("stray:latest")], True, [("stray:latest", "delete")], []),
    ("pull missing", [pulled()], [], False, [("qwen:0.5b", "pull")], []),
    ("pull present unpinned is no-op", [pulled()], [ModelState("qwen:0.5b", digest="sha256:" + "c" * 64)], False, [("qwen:0.5b", "no-op")], []),
    ("pull present at pinned digest", [pulled(pin="sha256:" + "c" * 64)], [ModelState("qwen:0.5b", digest="c" * 64)], False, [("qwen:0.5b", "no-op")], []),
    ("pull present at other digest", [pulled(pin="sha256:" + "d" * 64)], [ModelState("qwen:0.5b", digest="c" * 64)], False, [("qwen:0.5b", "pull")], []),
    (
        "variant after its base, deletes last",
        [built("a-variant:latest", after=("base:latest",)), built("base:latest")],
        [state("old:latest")],
        True,
        [("base:latest", "create"), ("a-variant:latest", "create"), ("old:latest", "delete")],
        [],
    ),
]


@pytest.mark.parametrize("desired,actual,prune,expected,unmanaged", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diff(desired, actual, prune, expected, unmanaged):
    changes, kept = diff(by_key(*desired), by_key(*actual), prune=prune)
    assert [(c.model, c.action) for c in changes] == expected
    assert list(kept) == unmanaged


FIELD_CASES = [
    # (id, want, have, expected [(field, name, before, after)])
    ("same", state(parameters={"temperature": 0.3}), state(parameters={"temperature": 0.3}), []),
    (
        "parameter value",
        state(parameters={"temperature": 0.2}),
        state(parameters={"temperature": 0.3}),
        [("parameter", "temperature", 0.3, 0.2)],
    ),
    ("float32 precision is equal", state(parameters={"top_p": 0.9}), state(parameters={"top_p": 0.8999999761581421}), []),
    ("int vs float same number", state(parameters={"temperature": 1}), state(parameters={"temperature": 1.0}), []),
    ("stop order is irrelevant", state(parameters={"stop": ("a", "b")}), state(parameters={"stop": ["b", "a"]}), []),
    ("stop set differs", state(parameters={"stop": ("a",)}), state(parameters={"stop": ("a", "b")}), [("parameter", "stop", ("a", "b"), ("a",))]),
    ("removed parameter (complete)", state(), state(parameters={"top_k": 40}), [("parameter", "top_k", 40, None)]),
    ("server-added parameter ignored (incomplete)", state(complete=False), state(parameters={"stop": ("x",)}), []),
    ("added parameter", state(parameters={"num_ctx": 4096}), state(), [("parameter", "num_ctx", None, 4096)]),
    ("template exact text", state(template="A\n"), state(template="A"), [("template", None, "A", "A\n")]),
    ("unset template not compared", state(template=None), state(template="whatever"), []),
    ("system removed (complete)", state(), state(system="old"), [("system", None, "old", None)]),
    ("system unset, incomplete", state(complete=False), state(system="old"), []),
    (
        "messages in order",
        state(messages=(("user", "a"), ("assistant", "b"))),
        state(messages=(("assistant", "b"), ("user", "a"))),
        [("message", None, (("assistant", "b"), ("user", "a")), (("user", "a"), ("assistant", "b")))],
    ),
    ("license", state(license="MIT"), state(license="Apache"), [("license", None, "Apache", "MIT")]),
    ("adapter", state(adapters=(BASE_B,)), state(), [("adapter", None, (), (BASE_B,))]),
    ("base unknown on one side", state(base=None), state(), []),
    ("bool parameter", state(parameters={"use_mmap": False}), state(parameters={"use_mmap": True}), [("parameter", "use_mmap", True, False)]),
]


@pytest.mark.parametrize("want,have,expected", [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_compare(want, have, expected):
    got = [(f.field, f.name, f.before, f.after) for f in compare(want, have)]
    assert got == expected


def test_exact_compares_unset_fields():
    # Between two versions of a stack an unset TEMPLATE is a change too.
    assert [f.field for f in compare(state(template=None), state(template="x"), exact=True)] == ["template"]


@pytest.mark.parametrize(
    "a,b,equal",
    [(0.3, 0.3, True), (0.3, 0.30000001192092896, True), (0.3, 0.2, False), (1, True, False), (True, True, True),
     (4096, 4096, True), (4096, 4097, False), ("x", "x", True), (("a",), "a", True), (None, None, True), (None, 0, False)],
)
def test_same_parameter(a, b, equal):
    assert same_parameter(a, b) is equal


def test_cycle_is_an_error():
    a = built("a:latest", after=("b:latest",))
    b = built("b:latest", after=("a:latest",))
    with pytest.raises(CorralError, match="cycle"):
        diff(by_key(a, b), {})


def test_plan_counts_and_pending():
    changes, _ = diff(by_key(built("x:latest"), built("y:latest", system="s")), by_key(state("y:latest")), prune=False)
    plan = Plan("default", "http://h", changes)
    assert plan.counts()["create"] == 1 and plan.counts()["update"] == 1
    assert [c.model for c in plan.pending] == ["x:latest", "y:latest"]
