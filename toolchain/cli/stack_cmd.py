"""`stack plan|apply|diff|init|schema`: the stack file commands.

Exit codes: 0 success; 1 error; with `--detailed-exitcode`, 2 when the plan has changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.errors import CorralError

FORMATS = ("text", "json", "markdown")
DEFAULT_FILE = "stack.yaml"


def _render(plans, fmt: str, stack_path: str = "", title: str = "Corral plan", edge=None) -> str:  # noqa: ANN001
    from toolchain.stack import render_plan

    if fmt == "json":
        return render_plan.render_json(plans, stack_path, edge)
    if fmt == "markdown":
        return render_plan.render_markdown(plans, title, edge)
    return render_plan.render_text(plans) + (edge.text() if edge is not None else "")


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise CorralError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    return fmt


def plan(
    file: Path = typer.Option(Path(DEFAULT_FILE), "-f", "--file", help="The stack file."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Plan only this target (repeatable)."),
    fmt: str = typer.Option("text", "--format", help="text, json or markdown."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the plan (JSON) for `stack apply PLAN`."),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 2 when there are changes."),
) -> None:
    """Show what `stack apply` would change on each target server."""
    from toolchain.stack import render_plan
    from toolchain.stack.load import load
    from toolchain.stack.targets import plan_stack

    _check_format(fmt)
    loaded = load(file)
    plans = plan_stack(loaded, target or ())
    if out is not None:
        out.write_text(render_plan.render_json(plans, str(file)), encoding="utf-8")
    edge = _edge(loaded) if not target else None
    typer.echo(_render(plans, fmt, str(file), edge=edge), nl=False)
    if out is not None and fmt == "text":
        typer.echo(f"\nSaved the plan to {out}; apply exactly it with: stack apply {out}")
    if detailed_exitcode and (render_plan.has_changes(plans) or (edge is not None and edge.changed)):
        raise typer.Exit(2)


def _edge(loaded):  # noqa: ANN001, ANN202
    """Open WebUI's presets and the rendered edge files (nginx, Open WebUI, compose, systemd) that differ."""
    from toolchain.render.from_stack import render_changes
    from toolchain.stack.edge_plan import EdgePlan

    return EdgePlan(_presets(loaded), tuple(render_changes(loaded)))


def _presets(loaded):  # noqa: ANN001, ANN202
    """Open WebUI's preset plan when the stack names an admin key (toolchain.stack.webui_sync)."""
    from toolchain.stack.webui_sync import prepare

    return prepare(loaded, warn=lambda line: typer.echo(f"Warning: {line}", err=True))


def apply(
    plan_file: Optional[Path] = typer.Argument(None, help="A plan saved by `stack plan --out` (applied exactly)."),
    file: Path = typer.Option(Path(DEFAULT_FILE), "-f", "--file", help="The stack file."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Apply only to this target (repeatable)."),
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Do not ask for confirmation."),
    lock_timeout: float = typer.Option(0.0, "--lock-timeout", help="Seconds to wait for another apply to finish."),
    test: bool = typer.Option(False, "--test", help="Then run `stack test` (no rollback: it says how to revert)."),
    parallel: int = typer.Option(1, "--parallel", min=1, help="Apply this many targets at once (default: one after another)."),
) -> None:
    """Make the target servers match the stack (or perform a saved plan).

    Targets are applied in the stack's order, `--parallel` at a time; the first failure stops it
    (targets not started keep their old state). A pulled model is fetched from its registry once
    and relayed to the other replicas through their registry endpoints.
    """
    if test:  # stack test's part (toolchain.cli.stacktest_cmd)
        from toolchain.cli.stacktest_cmd import apply_then_test

        raise typer.Exit(apply_then_test(lambda: apply(plan_file, file, target, auto_approve, lock_timeout, False, parallel), plan_file, file, target or []))
    from toolchain.stack import render_plan
    from toolchain.stack.apply import ApplyResult
    from toolchain.stack.fleet import Outcome, apply_targets
    from toolchain.stack.load import load
    from toolchain.stack.targets import Target, plan_stack, targets

    if plan_file is not None:
        try:
            doc = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorralError(f"cannot read saved plan {plan_file}: {exc}") from None
        plans = render_plan.from_document(doc)
        if target:
            plans = [p for p in plans if p.target in target]
        tokens = _tokens(Path(doc.get("stack") or file))
        clients = {p.target: Target(p.target, p.url, tokens.get(p.target)) for p in plans}
        saved = True
    else:
        loaded = load(file)
        plans = plan_stack(loaded, target or ())
        clients = {t.name: t for t in targets(loaded, target or ())}
        saved = False
    # Presets follow the whole stack: not for a saved plan (it holds none) or a --target subset.
    presets = _presets(loaded) if not saved and not target else None
    preset_changes = presets is not None and bool(presets.changes)
    typer.echo(render_plan.render_text(plans), nl=False)
    if presets is not None:
        typer.echo("\n" + presets.text(), nl=False)
    if (not render_plan.has_changes(plans) and not preset_changes
            and not any(c.desired and c.desired.preload for p in plans for c in p.changes)):
        return
    if (render_plan.has_changes(plans) or preset_changes) and not (auto_approve or saved):
        if not sys.stdin.isatty():
            raise CorralError("refusing to apply without confirmation: stdin is not a terminal; use --auto-approve")
        if not typer.confirm("\nApply these changes?", default=False):
            raise CorralError("apply cancelled; nothing was changed")
    outcome = Outcome([ApplyResult(p.target) for p in plans])
    try:
        apply_targets(plans, clients, parallel=parallel, echo=typer.echo,
                      warn=lambda line: typer.echo(f"Warning: {line}", err=True),
                      saved=saved, lock_timeout=lock_timeout, progress=sys.stderr, outcome=outcome)
    except KeyboardInterrupt:
        done = outcome.done
        typer.echo(f"\nInterrupted after {done} change(s); every model is either old or new. "
                   "Run `stack plan` to see what remains.", err=True)
        raise typer.Exit(130)
    total = sum(len(p.pending) for p in plans)
    if outcome.failed:
        _stopped(outcome, total)
    typer.echo(f"\nApply complete: {outcome.done} of {total} change(s) made.")
    if presets is not None:
        presets.apply(typer.echo)  # after the models, which the presets run on


def _stopped(outcome, total: int) -> None:  # noqa: ANN001
    """Report an apply that stopped at a failure; raises (exit 1)."""
    failures = outcome.failed
    for name, exc in failures:
        if not isinstance(exc, CorralError):
            raise exc  # a bug, not a failure to report as a line
    if len(outcome.results) == 1:
        raise failures[0][1]  # one server: its error, as it always was
    lines = [_named(name, exc) for name, exc in failures]
    for line in lines[1:]:
        typer.echo(f"Error: {line}", err=True)
    applied = [r.target for r in outcome.results if r.target not in {n for n, _ in failures} | set(outcome.not_started)]
    typer.echo(f"\nStopped: {outcome.done} of {total} change(s) made; "
               f"applied: {', '.join(applied) or 'none'}; failed: {', '.join(n for n, _ in failures)}; "
               f"not started: {', '.join(outcome.not_started) or 'none'}.")
    rest = f" (stopped there; not started, unchanged: {', '.join(outcome.not_started)})" if outcome.not_started else ""
    raise CorralError(lines[0] + rest)


def _named(target: str, exc: BaseException) -> str:
    """An apply error that names its target (step failures already start with it)."""
    text = str(exc)
    return text if text.startswith(f"{target}: ") else f"target {target}: {text}"


def _tokens(stack_file: Path) -> dict[str, Optional[str]]:
    """Target tokens for a saved plan, from its stack file (saved plans never hold secrets).

    Only the tokens' variables must be set: the rest of the stack is not needed to apply.
    """
    from toolchain.stack.load import WorkTree, load_text

    if not stack_file.is_file():
        return {}
    tree, rel = WorkTree.for_file(stack_file)
    loaded = load_text(tree.read_text(rel), tree, rel, strict_env=False)
    tokens = {}
    for name, target in loaded.stack.targets.items():
        if target.token and "${" in target.token:
            var = target.token.split("${", 1)[1].split("}", 1)[0].split(":-", 1)[0]
            raise loaded.error(f"environment variable {var} is not set", "targets", name, "token")
        tokens[name] = target.token
    return tokens


def diff(
    base: str = typer.Argument("HEAD", help="The git revision to compare from."),
    head: Optional[str] = typer.Argument(None, help="The git revision to compare to (default: the working tree)."),
    file: Path = typer.Option(Path(DEFAULT_FILE), "-f", "--file", help="The stack file (path in the repository)."),
    fmt: str = typer.Option("text", "--format", help="text, json or markdown."),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 2 when models change."),
) -> None:
    """Which models a change to the stack or its Modelfiles touches, and how (git only, no server)."""
    from toolchain.stack.gitdiff import diff_revisions

    _check_format(fmt)
    result = diff_revisions(file, base, head)
    typer.echo(_render([result], fmt, str(file), title=f"Corral stack diff {result.target}"), nl=False)
    if detailed_exitcode and result.pending:
        raise typer.Exit(2)


def lock(
    file: Path = typer.Option(Path(DEFAULT_FILE), "-f", "--file", help="The stack file."),
    update: bool = typer.Option(False, "--update", help="Re-resolve pinned references too."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the new pins without writing them."),
) -> None:
    """Pin pulled models to the manifest digest their registry serves now (comments kept)."""
    from toolchain.stack.pin import lock_file

    changes = lock_file(file, update=update, dry_run=dry_run)
    for c in changes:
        typer.echo(f"{c.model}: {c.before} → {c.after}")
    if not changes:
        typer.echo("Every pulled model is pinned." if not update else "Every pin matches its registry.")
    elif dry_run:
        typer.echo(f"(dry run: {file} not changed)")
    else:
        typer.echo(f"Wrote {len(changes)} pin(s) to {file}.")


def init(
    path: Path = typer.Argument(Path(DEFAULT_FILE), help="Where to write the starter stack."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter stack file."""
    from toolchain.stack.starter import STARTER

    if path.exists() and not force:
        raise CorralError(f"{path} already exists; use --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER, encoding="utf-8")
    typer.echo(f"Wrote {path}. Edit it, then run: stack plan -f {path}")


def schema() -> None:
    """Print the JSON Schema of stack files (for editors)."""
    from toolchain.stack.schema import json_schema_text

    typer.echo(json_schema_text(), nl=False)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("apply")(apply)
    app.command("diff")(diff)
    app.command("lock")(lock)
    app.command("init")(init)
    app.command("schema")(schema)
