"""Rendering test results: a rich table (text), JSON, JUnit XML (CI test reports) and markdown
(the pull-request comment), for a plain run (`TargetRun`s) and for `--plan` comparisons
(`TargetComparison`s). Pure: values in, text out.
"""

from __future__ import annotations

import html
import io
import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from toolchain.stacktest.compare import Pair, TargetComparison, word_diff
from toolchain.stacktest.run import Result

FORMATS = ("text", "json", "junit", "markdown")
FORMAT_VERSION = "1.0"
MARKDOWN_LIMIT = 65_000  # GitHub refuses comments over 65,535 characters
ANSWER_LIMIT = 3_000  # characters of one answer shown in markdown
MARK = {"pass": "✓ pass", "fail": "✗ fail", "error": "! error", None: "(new)"}


@dataclass
class TargetRun:
    """The results of `stack test` on one server (or why it could not run)."""

    target: str
    url: str
    results: list[Result] = field(default_factory=list)
    error: Optional[str] = None


def counts(results: Sequence[Result]) -> dict[str, int]:
    return {k: sum(1 for r in results if r.outcome == k) for k in ("pass", "fail", "error")}


def summary_line(c: dict[str, int]) -> str:
    return f"{c['pass']} passed, {c['fail']} failed, {c['error']} error{'s' if c['error'] != 1 else ''}"


def excerpt(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _tokens(r: Optional[Result]) -> str:
    return str(r.answer.tokens) if r is not None and r.answer is not None and r.answer.tokens is not None else ""


def _seconds(r: Optional[Result]) -> str:
    return f"{r.answer.seconds:.2f}" if r is not None and r.answer is not None and r.answer.seconds is not None else ""


def _console(out: io.StringIO) -> Any:
    from rich.console import Console

    width = shutil.get_terminal_size((120, 24)).columns if os.isatty(1) else 120
    return Console(file=out, width=max(width, 80), no_color=not os.isatty(1), highlight=False, soft_wrap=False)


# -- a run -----------------------------------------------------------------------------------------


def render_text(runs: Sequence[TargetRun]) -> str:
    from rich.table import Table

    out = io.StringIO()
    console = _console(out)
    many = len(runs) > 1
    for run in runs:
        if run.error:
            console.print(f"[{run.target}] could not run the tests: {run.error}", markup=False)
            continue
        if not run.results:
            console.print(f"[{run.target}] no tests selected", markup=False)
            continue
        table = Table(title=f"stack test: {run.target} ({run.url})" if many else None, title_justify="left")
        for name, kw in (("model", {}), ("test", {}), ("result", {}), ("tokens", {"justify": "right"}),
                         ("seconds", {"justify": "right"}), ("reason / answer", {"overflow": "fold"})):
            table.add_column(name, **kw)
        for r in run.results:
            style = {"pass": "green", "fail": "red", "error": "yellow"}[r.outcome]
            detail = r.reason if r.outcome != "pass" else ""
            if r.answer is not None:
                detail = (detail + "\n" if detail else "") + "“" + excerpt(r.answer.text) + "”"
            table.add_row(r.test.model, r.test.name, f"[{style}]{MARK[r.outcome]}[/]", _tokens(r), _seconds(r), detail)
        console.print(table)
    all_results = [r for run in runs for r in run.results]
    console.print(summary_line(counts(all_results)) + "".join(f"; target {r.target} failed" for r in runs if r.error),
                  markup=False)
    return out.getvalue()


def _result_doc(r: Result) -> dict[str, Any]:
    a = r.answer
    return {
        "model": r.test.model,
        "asked": r.model,
        "test": r.test.name,
        "origin": r.test.origin,
        "outcome": r.outcome,
        "reasons": list(r.reasons),
        "error": r.error,
        "answer": a.text if a else None,
        "tokens": a.tokens if a else None,
        "seconds": round(a.seconds, 3) if a and a.seconds is not None else None,
        "done_reason": a.done_reason if a else None,
    }


def render_json(runs: Sequence[TargetRun]) -> str:
    doc = {
        "format_version": FORMAT_VERSION,
        "summary": counts([r for run in runs for r in run.results]),
        "targets": [
            {"name": run.target, "url": run.url, "error": run.error, "results": [_result_doc(r) for r in run.results]}
            for run in runs
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_junit(runs: Sequence[TargetRun]) -> str:
    """JUnit XML: one <testsuite> per target and model, one <testcase> per test."""
    root = ET.Element("testsuites", name="stack test")
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    for run in runs:
        if run.error:
            suite = ET.SubElement(root, "testsuite", name=run.target, tests="1", failures="0", errors="1", time="0")
            case = ET.SubElement(suite, "testcase", classname=run.target, name="(server)", time="0")
            ET.SubElement(case, "error", message=run.error, type="error")
            totals["tests"] += 1
            totals["errors"] += 1
            continue
        by_model: dict[str, list[Result]] = {}
        for r in run.results:
            by_model.setdefault(r.test.model, []).append(r)
        for model, results in by_model.items():
            c = counts(results)
            seconds = sum(r.answer.seconds or 0.0 for r in results if r.answer is not None)
            suite = ET.SubElement(root, "testsuite", name=f"{run.target}/{model}", tests=str(len(results)),
                                  failures=str(c["fail"]), errors=str(c["error"]), time=f"{seconds:.3f}")
            for r in results:
                case = ET.SubElement(suite, "testcase", classname=f"{run.target}.{model}", name=r.test.name,
                                     time=_seconds(r) or "0", file=r.test.origin.rsplit(":", 1)[0],
                                     line=r.test.origin.rsplit(":", 1)[-1])
                if r.outcome == "fail":
                    el = ET.SubElement(case, "failure", message=r.reason, type="expectation")
                    el.text = r.reason
                elif r.outcome == "error":
                    el = ET.SubElement(case, "error", message=r.reason, type="error")
                    el.text = r.reason
                if r.answer is not None:
                    ET.SubElement(case, "system-out").text = _xml_text(r.answer.text)
            totals["tests"] += len(results)
            totals["failures"] += c["fail"]
            totals["errors"] += c["error"]
            totals["time"] += seconds
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _xml_text(text: str) -> str:
    """Text XML 1.0 can hold (a model may emit control characters)."""
    return "".join(c if c in "\t\n\r" or (ord(c) >= 0x20 and not 0xD800 <= ord(c) <= 0xDFFF and c not in "\ufffe\uffff")
                   else "\ufffd" for c in text)


def _md_cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    """A fenced block that the text cannot close."""
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text}\n{ticks}"


def render_markdown(runs: Sequence[TargetRun]) -> str:
    c = counts([r for run in runs for r in run.results])
    out = ["### Corral stack test", "", f"**{summary_line(c)}**", ""]
    for run in runs:
        out += [f"#### Target `{run.target}` (`{run.url}`)", ""]
        if run.error:
            out += [f"Could not run the tests: {_md_cell(run.error)}", ""]
            continue
        out += ["| model | test | result | tokens | seconds | reason | answer |", "|---|---|---|---|---|---|---|"]
        for r in run.results:
            answer = excerpt(r.answer.text, 100) if r.answer is not None else ""
            out.append(f"| `{r.test.model}` | {_md_cell(r.test.name)} | {MARK[r.outcome]} | {_tokens(r)} | {_seconds(r)} "
                       f"| {_md_cell(r.reason if r.outcome != 'pass' else '')} | {_md_cell(answer)} |")
        out.append("")
    return _cut("\n".join(out))


def _cut(text: str, limit: int = MARKDOWN_LIMIT) -> str:
    if len(text) > limit:
        cut = text[:limit]
        cut = cut.rsplit("\n<details>", 1)[0] if "\n<details>" in cut else cut.rsplit("\n", 1)[0]
        text = cut + "\n\n_The report is too long for one comment; the full report is in the job's log._\n"
    return text if text.endswith("\n") else text + "\n"


# -- a comparison (--plan) -----------------------------------------------------------------------


def compare_counts(comparisons: Sequence[TargetComparison]) -> dict[str, int]:
    pairs = [p for c in comparisons for p in c.pairs]
    return {
        "tests": len(pairs),
        "outcome_changed": sum(p.outcome_changed for p in pairs),
        "answer_changed": sum(p.answer_changed for p in pairs),
        "new": sum(p.before is None for p in pairs),
        **{f"after_{k}": v for k, v in counts([p.after for p in pairs]).items()},
    }


def compare_summary(comparisons: Sequence[TargetComparison]) -> str:
    c = compare_counts(comparisons)
    if not c["tests"]:
        return "No tested model changes."
    parts = [f"{c['tests']} test(s) of changed models", f"{c['outcome_changed']} outcome(s) changed",
             f"{c['answer_changed']} answer(s) changed"]
    if c["new"]:
        parts.append(f"{c['new']} on new models")
    parts.append(f"proposed: {summary_line({k: c['after_' + k] for k in ('pass', 'fail', 'error')})}")
    return ", ".join(parts)


def _transition(p: Pair) -> str:
    before = MARK[p.before.outcome] if p.before is not None else MARK[None]
    return f"{before} → {MARK[p.after.outcome]}"


def _by_model(comparison: TargetComparison) -> dict[str, list[Pair]]:
    groups: dict[str, list[Pair]] = {}
    for p in comparison.ordered():
        groups.setdefault(p.test.model, []).append(p)
    # models with a changed outcome first, then changed answers
    return dict(sorted(groups.items(), key=lambda kv: (not any(p.outcome_changed for p in kv[1]),
                                                        not any(p.answer_changed for p in kv[1]))))


def _notes(c: TargetComparison) -> list[str]:
    notes = []
    if c.error:
        notes.append(f"could not finish: {c.error}")
    if c.untested:
        notes.append("changed, no tests: " + ", ".join(c.untested))
    if c.skipped:
        notes.append("not compared: " + ", ".join(c.skipped))
    if c.swept:
        notes.append("removed stale scratch models of earlier runs: " + ", ".join(c.swept))
    if c.leftovers:
        notes.append("could not remove scratch models (delete them by hand): " + ", ".join(c.leftovers))
    return notes


def render_compare_text(comparisons: Sequence[TargetComparison]) -> str:
    from rich.text import Text

    out = io.StringIO()
    console = _console(out)
    for c in comparisons:
        console.print(f"Target {c.target} ({c.url}):", markup=False)
        for model, pairs in _by_model(c).items():
            console.print(f"  {model} ({pairs[0].action})", markup=False)
            for p in pairs:
                line = Text(f"    {_transition(p):<20} {p.test.name}")
                if p.after.outcome != "pass":
                    line.append(f"  ({p.after.reason})")
                console.print(line)
                if p.answer_changed:
                    assert p.before is not None and p.before.answer is not None and p.after.answer is not None
                    diff = Text("      ")
                    marks = {"=": "{}", "-": "[-{}-]", "+": "{{+{}+}}"}  # plain text: git's word-diff marks
                    for op, text in word_diff(p.before.answer.text, p.after.answer.text):
                        if os.isatty(1):
                            diff.append(text.replace("\n", "\n      "), style={"=": "", "-": "red strike", "+": "green"}[op])
                        else:
                            diff.append(marks[op].format(text).replace("\n", "\n      "))
                    console.print(diff)
        for note in _notes(c):
            console.print(f"  {note}", markup=False)
    console.print(compare_summary(comparisons), markup=False)
    return out.getvalue()


def render_compare_json(comparisons: Sequence[TargetComparison]) -> str:
    doc = {
        "format_version": FORMAT_VERSION,
        "summary": compare_counts(comparisons),
        "targets": [
            {
                "name": c.target, "url": c.url, "error": c.error, "untested": c.untested, "skipped": c.skipped,
                "scratch": c.scratch, "leftovers": c.leftovers, "swept": c.swept,
                "tests": [
                    {"model": p.test.model, "test": p.test.name, "action": p.action,
                     "outcome_changed": p.outcome_changed, "answer_changed": p.answer_changed,
                     "before": _result_doc(p.before) if p.before is not None else None, "after": _result_doc(p.after)}
                    for p in c.ordered()
                ],
            }
            for c in comparisons
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render_compare_junit(comparisons: Sequence[TargetComparison]) -> str:
    """The proposed models' results as JUnit (what CI gates on)."""
    runs = [TargetRun(c.target, c.url, [p.after for p in c.pairs], c.error) for c in comparisons]
    return render_junit(runs)


def render_compare_markdown(comparisons: Sequence[TargetComparison], limit: int = MARKDOWN_LIMIT) -> str:
    out = ["### Corral stack test: current → proposed", "", f"**{compare_summary(comparisons)}**", ""]
    for c in comparisons:
        out += [f"#### Target `{c.target}` (`{c.url}`)", ""]
        out += [f"- {_md_cell(n)}" for n in _notes(c)] + ([""] if _notes(c) else [])
        for model, pairs in _by_model(c).items():
            changed = sum(p.outcome_changed for p in pairs)
            answers = sum(p.answer_changed for p in pairs)
            head = f"{changed} outcome(s) changed, {answers} answer(s) changed" if pairs[0].before or answers else "new model"
            out += [f"<details><summary><code>{html.escape(model)}</code> ({pairs[0].action}): {head}</summary>", "",
                    "| test | current → proposed | reason |", "|---|---|---|"]
            for p in pairs:
                out.append(f"| {_md_cell(p.test.name)} | {_transition(p)} | "
                           f"{_md_cell(p.after.reason if p.after.outcome != 'pass' else '')} |")
            out.append("")
            for p in pairs:
                if not p.answer_changed and p.before is not None:
                    continue
                out += [f"**{html.escape(p.test.name)}**", ""]
                if p.before is not None and p.before.answer is not None and p.after.answer is not None:
                    b, a = p.before.answer.text, p.after.answer.text
                    from toolchain.stacktest.compare import plain_word_diff

                    out += ["Current:", "", _fence(b[:ANSWER_LIMIT]), "", "Proposed:", "", _fence(a[:ANSWER_LIMIT]), "",
                            "Word diff (`[-removed-]{+added+}`):", "", _fence(plain_word_diff(b[:ANSWER_LIMIT], a[:ANSWER_LIMIT])), ""]
                elif p.after.answer is not None:
                    out += ["Proposed:", "", _fence(p.after.answer.text[:ANSWER_LIMIT]), ""]
            out += ["</details>", ""]
    return _cut("\n".join(out), limit)


def render(runs: Sequence[TargetRun], fmt: str) -> str:
    return {"text": render_text, "json": render_json, "junit": render_junit, "markdown": render_markdown}[fmt](runs)


def render_compare(comparisons: Sequence[TargetComparison], fmt: str) -> str:
    return {"text": render_compare_text, "json": render_compare_json, "junit": render_compare_junit,
            "markdown": render_compare_markdown}[fmt](comparisons)
