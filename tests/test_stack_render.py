"""Plan rendering: text, markdown and the JSON document (also the saved-plan format)."""

from __future__ import annotations

import json

import pytest

from toolchain.errors import CorralError
from toolchain.stack.plan import Plan, diff
from toolchain.stack.render_plan import (
    FORMAT_VERSION,
    MARKDOWN_LIMIT,
    from_document,
    render_json,
    render_markdown,
    render_text,
    to_document,
)
from toolchain.stack.state import DesiredModel, ModelState, Upload, key_of

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def desired(name, **kw):
    create = kw.pop("create", {"from": "base"})
    uploads = kw.pop("uploads", ())
    return DesiredModel(key_of(name), ModelState(name, base=kw.pop("base", A), template="T", **kw), "create", create,
                        uploads=uploads, origin="stack.yaml:3")


def make_plan(prune=False):
    want = {
        d.key: d
        for d in [
            desired("bot:latest", system="You are a helpful bot.", parameters={"temperature": 0.2, "stop": ("<a>",)}),
            desired("new:latest", base_ref="./m.gguf", create={"files": {"m.gguf": A}}, uploads=(Upload(A, "/x/m.gguf", 10),)),
            desired("heavy:latest", base=B),
            desired("same:latest"),
        ]
    }
    have = {
        key_of(s.name): s
        for s in [
            ModelState("bot:latest", base=A, template="T", system="You are a bot.", parameters={"temperature": 0.3, "stop": ("<b>",), "top_k": 40}, digest="sha256:1"),
            ModelState("heavy:latest", base=A, template="T", digest="sha256:2"),
            ModelState("same:latest", base=A, template="T", digest="sha256:3"),
            ModelState("stray:latest", digest="sha256:4"),
        ]
    }
    changes, unmanaged = diff(want, have, prune=prune)
    return Plan("local", "http://127.0.0.1:11434", changes, unmanaged, "sha256:fp", prune)


def test_text():
    text = render_text([make_plan()])
    assert text.startswith("Model actions are indicated with the following symbols:\n    + create\n    ~ update in-place\n  -/+ replace (new base weights)\n\n")
    for line in [
        'Target "local" (http://127.0.0.1:11434):',
        "  # bot:latest will be updated in-place (the Modelfile differs)",
        '  ~ model "bot:latest"',
        "      ~ PARAMETER temperature 0.3 → 0.2",
        "      - PARAMETER stop <b>",
        "      + PARAMETER stop <a>",
        "      - PARAMETER top_k 40",
        "          -You are a bot.",
        "          +You are a helpful bot.",
        "  # heavy:latest must be replaced (the base model differs)",
        "      ~ FROM sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb  # forces replacement",
        "  # new:latest will be created (not on the server)",
        "      from ./m.gguf",
        "  (1 unchanged model hidden)",
        "  Not in the stack, kept because prune is off: stray:latest",
    ]:
        assert line + "\n" in text, line
    assert text.endswith("Plan: 1 to create, 1 to update, 1 to replace, 0 to delete.\n")
    assert "- delete" not in text  # only the symbols in use are explained


def test_text_with_prune_and_no_changes():
    assert "  - delete\n" in render_text([make_plan(prune=True)])
    assert render_text([make_plan(prune=True)]).endswith("Plan: 1 to create, 1 to update, 1 to replace, 1 to delete.\n")
    empty = Plan("local", "http://h:1", ())
    assert render_text([empty]) == 'Target "local" (http://h:1):\n  No changes. The server matches the stack.\n\nNo changes. Every server matches the stack.\n'


def test_markdown():
    md = render_markdown([make_plan()])
    assert md.startswith("### Corral plan\n\n**Plan: 1 to create, 1 to update, 1 to replace, 0 to delete.**\n")
    assert "| `~` | `bot:latest` | update | the Modelfile differs |" in md
    assert "<details><summary><code>-/+ heavy:latest</code> must be replaced</summary>" in md
    assert "```diff\n" in md and "! PARAMETER temperature 0.3 → 0.2\n" in md and "-   You are a bot.\n" in md
    assert "kept (prune is off): `stray:latest`" in md


def test_markdown_is_cut_below_githubs_limit():
    many = {}
    for i in range(400):
        d = desired(f"m{i}:latest", system="line\n" * 40)
        many[d.key] = d
    changes, _ = diff(many, {})
    md = render_markdown([Plan("local", "http://h", changes)])
    assert len(md) <= MARKDOWN_LIMIT + 200
    assert md.rstrip().endswith("_The plan is too long for one comment; the full plan is in the job's log and artifact._")


def test_json_document():
    doc = json.loads(render_json([make_plan()], "stacks/s.yaml"))
    assert doc["format_version"] == FORMAT_VERSION and doc["stack"] == "stacks/s.yaml" and doc["changed"] is True
    assert doc["summary"] == {"create": 1, "pull": 0, "update": 1, "replace": 1, "delete": 0, "no-op": 1}
    target = doc["targets"][0]
    assert (target["name"], target["url"], target["fingerprint"], target["unmanaged"]) == ("local", "http://127.0.0.1:11434", "sha256:fp", ["stray:latest"])
    by = {c["model"]: c for c in target["changes"]}
    assert by["heavy:latest"]["actions"] == ["delete", "create"] and by["same:latest"]["actions"] == ["no-op"]
    assert {"field": "parameter", "name": "temperature", "before": 0.3, "after": 0.2} in by["bot:latest"]["diff"]
    assert by["new:latest"]["desired"]["uploads"] == [{"digest": A, "path": "/x/m.gguf", "size": 10}]
    assert by["bot:latest"]["before_digest"] == "sha256:1"


def test_saved_plan_round_trip():
    plan = make_plan()
    back = from_document(to_document([plan]))[0]
    assert (back.target, back.url, back.fingerprint, back.unmanaged) == (plan.target, plan.url, plan.fingerprint, plan.unmanaged)
    assert [(c.model, c.action) for c in back.changes] == [(c.model, c.action) for c in plan.changes]
    for a, b in zip(back.changes, plan.changes):
        assert a.desired.create == b.desired.create and a.desired.uploads == b.desired.uploads


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"x": 1}, "not a saved plan"),
        ({"format_version": "9.0", "targets": []}, "saved plan format 9.0 is not supported"),
        ({"format_version": "1.0", "targets": [{"name": "a"}]}, "saved plan is malformed"),
        ({"format_version": "1.0", "targets": [{"name": "a", "url": "u", "fingerprint": "f", "changes": [{"model": "m", "action": "explode"}]}]}, "unknown action"),
    ],
)
def test_bad_saved_plans(doc, message):
    with pytest.raises(CorralError, match=message):
        from_document(doc)


def fleet():
    """Three replicas: two need changes, one matches the stack."""
    a = make_plan()
    b = Plan("gpu-2", "http://10.0.0.12:11434", a.changes[:1] + a.changes[3:], (), "sha256:fp2")
    c = Plan("gpu-3", "http://10.0.0.13:11434", tuple(ch for ch in a.changes if ch.action == "no-op"), (), "sha256:fp3")
    return [a, b, c]


def test_fleet_text_has_a_section_per_server_and_a_total():
    text = render_text(fleet())
    sections = [text.index(f'Target "{n}"') for n in ("local", "gpu-2", "gpu-3")]
    assert sections == sorted(sections)
    assert '  Plan for "local": 1 to create, 1 to update, 1 to replace, 0 to delete.\n' in text
    assert '  Plan for "gpu-2": 0 to create, 1 to update, 0 to replace, 0 to delete.\n' in text
    assert 'Target "gpu-3" (http://10.0.0.13:11434):\n  No changes. The server matches the stack.\n' in text
    assert 'Plan for "gpu-3"' not in text  # a server without changes says so once
    assert text.endswith("Total for 3 targets (2 with changes): 1 to create, 2 to update, 1 to replace, 0 to delete.\n")
    # one server keeps the one-line summary it always had
    assert render_text(fleet()[:1]).endswith("\nPlan: 1 to create, 1 to update, 1 to replace, 0 to delete.\n")


def test_fleet_markdown_and_json_carry_the_total():
    md = render_markdown(fleet())
    assert md.startswith("### Corral plan\n\n**Total for 3 targets (2 with changes): 1 to create, 2 to update, 1 to replace, 0 to delete.**\n")
    assert "#### Target `gpu-2` (`http://10.0.0.12:11434`)" in md
    assert 'Plan for "gpu-2": 0 to create, 1 to update, 0 to replace, 0 to delete.\n' in md
    doc = to_document(fleet())
    assert doc["summary"] == {"create": 1, "pull": 0, "update": 2, "replace": 1, "delete": 0, "no-op": 3}
    assert [t["summary"]["update"] for t in doc["targets"]] == [1, 1, 0]
