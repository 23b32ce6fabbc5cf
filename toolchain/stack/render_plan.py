"""Plans for people and programs: Terraform-like text, markdown for a pull request, JSON.

The JSON document (`to_document`) is the saved-plan format too: `stack plan --out plan.json`
writes it and `stack apply plan.json` reads it back with `from_document`. Its schema is
described in docs/stack.md; `format_version` changes its minor number for additive changes
and its major number for anything else.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Iterable, Optional, Sequence

from toolchain.errors import CorralError
from toolchain.stack.plan import ACTIONS, Change, FieldChange, Plan, summary_counts
from toolchain.stack.state import DesiredModel, ModelState, Upload, key_of

FORMAT_VERSION = "1.1"  # 1.1: webui_presets and rendered_files (toolchain.stack.edge_plan)
MARKDOWN_LIMIT = 65_000  # GitHub refuses comments over 65,535 characters

SYMBOL = {"create": "+", "pull": "↓", "update": "~", "replace": "-/+", "delete": "-"}
LEGEND = {
    "create": "create",
    "pull": "pull from a registry",
    "update": "update in-place",
    "replace": "replace (new base weights)",
    "delete": "delete",
}
HEADLINE = {
    "create": "will be created",
    "pull": "will be pulled",
    "update": "will be updated in-place",
    "replace": "must be replaced",
    "delete": "will be deleted",
}


def counts_text(n: dict[str, int]) -> str:
    """`1 to pull, 2 to create, 0 to update, 0 to replace, 0 to delete.` (pulls only when there are any)."""
    head = f"{n['pull']} to pull, " if n["pull"] else ""
    return f"{head}{n['create']} to create, {n['update']} to update, {n['replace']} to replace, {n['delete']} to delete."


def summary_line(plans: Sequence[Plan]) -> str:
    """The plan's last line: `Plan: ...` for one target, the total over every target for a fleet."""
    if _fleet(plans):
        changed = sum(1 for p in plans if p.pending)
        return f"Total for {len(plans)} targets ({changed} with changes): {counts_text(summary_counts(plans))}"
    return f"Plan: {counts_text(summary_counts(plans))}"


def target_line(plan: Plan) -> str:
    """A fleet plan's count for one target (shown at the end of its section)."""
    return f'Plan for "{plan.target}": {counts_text(plan.counts())}'


def _fleet(plans: Sequence[Plan]) -> bool:
    """Several servers (not a `stack diff`, whose one 'target' is a pair of revisions)."""
    return len(plans) > 1 and all(p.url for p in plans)


def has_changes(plans: Sequence[Plan]) -> bool:
    return any(p.pending for p in plans)


# -- text --------------------------------------------------------------------------------------


def render_text(plans: Sequence[Plan]) -> str:
    out: list[str] = []
    used = [a for a in ACTIONS if a != "no-op" and any(c.action == a for p in plans for c in p.changes)]
    if used:
        out.append("Model actions are indicated with the following symbols:")
        out += [f"  {SYMBOL[a]:>3} {LEGEND[a]}" for a in used]
        out.append("")
    for plan in plans:
        out.append(f'Target "{plan.target}" ({plan.url}):' if plan.url else f"Stack {plan.target}:")
        if not plan.pending:
            out.append("  No changes. The server matches the stack." if plan.url else "  No changes to any model.")
        for change in plan.pending:
            out.append("")
            out += ["  " + line for line in change_lines(change)]
        unchanged = len(plan.changes) - len(plan.pending)
        if unchanged and plan.pending:
            out.append("")
            out.append(f"  ({unchanged} unchanged model{'s' if unchanged != 1 else ''} hidden)")
        if plan.unmanaged:
            out.append("")
            out.append(f"  Not in the stack, kept because prune is off: {', '.join(plan.unmanaged)}")
        if plan.pending and _fleet(plans):
            out.append("")
            out.append("  " + target_line(plan))
        out.append("")
    out.append(summary_line(plans) if has_changes(plans) else "No changes. Every server matches the stack.")
    return "\n".join(out) + "\n"


def change_lines(change: Change) -> list[str]:
    """`# name will be ...` then the per-field diff, indented."""
    sym = SYMBOL[change.action]
    lines = [f"# {change.model} {HEADLINE[change.action]} ({change.reason})", f"{sym} model \"{change.model}\""]
    body: list[str] = []
    desired = change.desired
    if change.action == "create" and desired is not None:
        body += _create_summary(desired)
    elif change.action == "pull" and desired is not None:
        ref = desired.pull + (f"@{desired.pin}" if desired.pin else "")
        body.append(f"pull {ref}")
    for fc in change.fields:
        body += field_lines(fc, desired)
    return lines + ["    " + b for b in body]


def _create_summary(desired: DesiredModel) -> list[str]:
    s = desired.state
    out = [f"from {s.base_ref or _short(s.base) or '?'}"]
    if desired.origin:
        out.append(f"defined in {desired.origin}")
    if s.system:
        lines = s.system.strip().splitlines() or [""]
        first = _clip(lines[0])
        out.append(f"SYSTEM {first}" + (" …" if len(lines) > 1 and not first.endswith("…") else ""))
    for name in sorted(s.parameters):
        for value in _values(s.parameters[name]):
            out.append(f"PARAMETER {name} {_fmt(value)}")
    return out


def field_lines(fc: FieldChange, desired: Optional[DesiredModel] = None) -> list[str]:
    if fc.field == "parameter":
        return _parameter_lines(fc)
    if fc.field == "base":
        ref = desired.state.base_ref if desired else None
        after = _short(fc.after) + (f" ({ref})" if ref and ref != fc.after else "")
        return [f"~ FROM {_short(fc.before)} → {after}  # forces replacement"]
    if fc.field == "digest":
        return [f"~ digest {_short(fc.before)} → {_short(fc.after)}"]
    if fc.field in ("template", "system", "license"):
        return _text_lines(fc.field.upper(), fc.before, fc.after)
    if fc.field == "message":
        before = [f"MESSAGE {r} {c}" for r, c in fc.before or ()]
        after = [f"MESSAGE {r} {c}" for r, c in fc.after or ()]
        return ["~ MESSAGE"] + ["    " + ln for ln in _unified(before, after)]
    if fc.field == "adapter":
        return [f"~ ADAPTER {', '.join(map(_short, fc.before)) or '(none)'} → {', '.join(map(_short, fc.after)) or '(none)'}"]
    return [f"~ {fc.field}"]


def _parameter_lines(fc: FieldChange) -> list[str]:
    name = fc.name
    before, after = fc.before, fc.after
    if isinstance(before, (list, tuple)) or isinstance(after, (list, tuple)):
        b, a = set(_values(before)), set(_values(after))
        return [f"- PARAMETER {name} {_fmt(v)}" for v in sorted(b - a)] + [
            f"+ PARAMETER {name} {_fmt(v)}" for v in sorted(a - b)
        ]
    if before is None:
        return [f"+ PARAMETER {name} {_fmt(after)}"]
    if after is None:
        return [f"- PARAMETER {name} {_fmt(before)}"]
    return [f"~ PARAMETER {name} {_fmt(before)} → {_fmt(after)}"]


def _text_lines(label: str, before: Optional[str], after: Optional[str]) -> list[str]:
    if not before:
        return [f"+ {label}"] + ["    + " + ln for ln in (after or "").splitlines()]
    if not after:
        return [f"- {label}"] + ["    - " + ln for ln in before.splitlines()]
    b, a = before.splitlines(), after.splitlines()
    if b == a:  # differs only in trailing newline / whitespace at the end
        return [f"~ {label} (whitespace at the end changed)"]
    changed = sum(1 for ln in difflib.ndiff(b, a) if ln[:1] in "+-")
    head = f"~ {label}" + (f" ({changed} lines changed)" if changed > 2 else "")
    return [head] + ["    " + ln for ln in _unified(b, a)]


def _unified(before: list[str], after: list[str]) -> list[str]:
    lines = list(difflib.unified_diff(before, after, "before", "after", n=1, lineterm=""))
    return lines[2:]  # drop the ---/+++ header


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if (not value or any(c in value for c in ' "\n\t')) else value
    return str(value)


def _short(digest: Optional[str]) -> str:
    if not digest:
        return "(none)"
    if digest.startswith("sha256:") and len(digest) == 71:
        return digest[:19]
    return digest


def _clip(text: str, n: int = 72) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- markdown ----------------------------------------------------------------------------------


def render_markdown(plans: Sequence[Plan], title: str = "Corral plan", edge: Optional[Any] = None) -> str:
    """`edge`: an `edge_plan.EdgePlan` whose section (presets, rendered files) follows the models."""
    head = summary_line(plans) if has_changes(plans) else "No changes. Every server matches the stack."
    if edge is not None and edge.changed and not has_changes(plans):
        head = "No model changes; Open WebUI presets or rendered files differ (below)."
    out = [f"### {title}", "", f"**{head}**", ""]
    for plan in plans:
        out.append(f"#### Target `{plan.target}` (`{plan.url}`)" if plan.url else f"#### Stack `{plan.target}`")
        out.append("")
        if not plan.pending:
            out += ["No changes.", ""]
        else:
            out += ["| | model | action | why |", "|---|---|---|---|"]
            for c in plan.pending:
                out.append(f"| `{SYMBOL[c.action]}` | `{c.model}` | {c.action} | {c.reason} |")
            out.append("")
            if _fleet(plans):
                out += [target_line(plan), ""]
            for c in plan.pending:
                out.append(f"<details><summary><code>{SYMBOL[c.action]} {c.model}</code> {HEADLINE[c.action]}</summary>")
                out += ["", "```diff"] + [_diff_marker(ln) for ln in change_lines(c)[2:]] + ["```", "", "</details>", ""]
        if plan.unmanaged:
            out += [f"Not in the stack, kept (prune is off): {', '.join(f'`{m}`' for m in plan.unmanaged)}", ""]
    if edge is not None and edge.markdown():
        out.insert(4, edge.markdown().rstrip("\n") + "\n")  # after the headline: short, and never cut with the model diffs
    text = "\n".join(out)
    if len(text) > MARKDOWN_LIMIT:
        cut = text[:MARKDOWN_LIMIT].rsplit("\n<details>", 1)[0]
        text = cut + "\n\n_The plan is too long for one comment; the full plan is in the job's log and artifact._\n"
    return text if text.endswith("\n") else text + "\n"


def _diff_marker(line: str) -> str:
    """A body line of `change_lines` shaped for GitHub's `diff` highlighting (symbol in column 1)."""
    body = line[4:] if line.startswith("    ") else line
    if body.startswith("    "):  # a line of a nested unified text diff
        inner = body[4:]
        if inner.startswith("@@"):
            return inner
        return (inner[:1] if inner[:1] in "+-" else " ") + "   " + inner[1:]
    if body[:1] in "+-~":
        return ("!" if body[0] == "~" else body[0]) + " " + body[1:].lstrip()
    return "  " + body


# -- JSON (also the saved-plan format) ---------------------------------------------------------


def to_document(plans: Sequence[Plan], stack_path: str = "", edge: Optional[Any] = None) -> dict[str, Any]:
    """`edge`: an `edge_plan.EdgePlan`, adding `webui_presets` and `rendered_files` (not in saved plans)."""
    doc = {
        "format_version": FORMAT_VERSION,
        "stack": stack_path,
        "changed": has_changes(plans) or bool(edge is not None and edge.changed),
        "summary": summary_counts(plans),
        "targets": [_plan_doc(p) for p in plans],
    }
    if edge is not None:
        doc.update(edge.document())
    return doc


def render_json(plans: Sequence[Plan], stack_path: str = "", edge: Optional[Any] = None) -> str:
    return json.dumps(to_document(plans, stack_path, edge), indent=2, ensure_ascii=False) + "\n"


def _plan_doc(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.target,
        "url": plan.url,
        "fingerprint": plan.fingerprint,
        "prune": plan.prune,
        "summary": plan.counts(),
        "unmanaged": list(plan.unmanaged),
        "changes": [_change_doc(c) for c in plan.changes],
    }


def _actions(action: str) -> list[str]:
    return ["delete", "create"] if action == "replace" else [action]


def _change_doc(c: Change) -> dict[str, Any]:
    return {
        "model": c.model,
        "action": c.action,
        "actions": _actions(c.action),
        "reason": c.reason,
        "before_digest": c.before_digest,
        "diff": [_field_doc(f) for f in c.fields],
        "desired": _desired_doc(c.desired) if c.desired else None,
    }


def _field_doc(f: FieldChange) -> dict[str, Any]:
    doc: dict[str, Any] = {"field": f.field}
    if f.name is not None:
        doc["name"] = f.name
    conv = (lambda v: [list(m) for m in v] if v is not None else None) if f.field == "message" else _jsonable
    doc["before"], doc["after"] = conv(f.before), conv(f.after)
    return doc


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _desired_doc(d: DesiredModel) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "origin": d.origin,
        "base": d.state.base,
        "base_ref": d.state.base_ref,
        "create": dict(d.create) if d.create is not None else None,
        "uploads": [{"digest": u.digest, "path": u.path, "size": u.size} for u in d.uploads],
        "pull": d.pull,
        "pin": d.pin,
        "insecure": d.insecure,
        "keep_alive": d.keep_alive,
        "preload": d.preload,
        "after": list(d.after),
    }


def from_document(doc: Any) -> list[Plan]:
    """Plans read back from a saved plan (`stack apply plan.json`)."""
    if not isinstance(doc, dict) or "format_version" not in doc or "targets" not in doc:
        raise CorralError("not a saved plan (expected a JSON document written by `stack plan --out`)")
    major = str(doc["format_version"]).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise CorralError(f"saved plan format {doc['format_version']} is not supported (this stack reads {FORMAT_VERSION})")
    try:
        return [_plan_from(t) for t in doc["targets"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorralError(f"saved plan is malformed: {exc}") from None


def _plan_from(t: dict[str, Any]) -> Plan:
    changes = tuple(
        Change(
            model=c["model"],
            action=c["action"],
            reason=c.get("reason", ""),
            desired=_desired_from(c["model"], c["desired"]) if c.get("desired") else None,
            before_digest=c.get("before_digest"),
        )
        for c in t["changes"]
    )
    for c in changes:
        if c.action not in ACTIONS:
            raise ValueError(f"unknown action {c.action!r}")
    return Plan(t["name"], t["url"], changes, tuple(t.get("unmanaged", ())), t["fingerprint"], bool(t.get("prune")))


def _desired_from(model: str, d: dict[str, Any]) -> DesiredModel:
    return DesiredModel(
        key=key_of(model),
        state=ModelState(name=model, base=d.get("base"), base_ref=d.get("base_ref")),
        kind=d["kind"],
        create=d.get("create"),
        uploads=tuple(Upload(u["digest"], u["path"], int(u["size"])) for u in d.get("uploads", ())),
        pull=d.get("pull"),
        pin=d.get("pin"),
        insecure=bool(d.get("insecure")),
        keep_alive=d.get("keep_alive"),
        preload=bool(d.get("preload")),
        after=tuple(d.get("after", ())),
        origin=d.get("origin", ""),
    )


def iter_pending(plans: Iterable[Plan]) -> Iterable[tuple[Plan, Change]]:
    for plan in plans:
        for change in plan.pending:
            yield plan, change
