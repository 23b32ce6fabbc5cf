"""`stack test`: run the stack's prompt regression tests against its servers.

    stack test [-f stack.yaml] [--model NAME] [--target NAME] [-k PATTERN] [--plan] [--format text|json|junit|markdown]

Exit codes: 0 every test passes, 1 a test fails, 2 errors (a bad stack or test file, an
unreachable server, a test that could not run, a scratch model that could not be made).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.cli import app
from toolchain.errors import CorralError

DEFAULT_PARALLEL = 4  # the server default of OLLAMA_NUM_PARALLEL when the stack's runtime does not say


@app.command("test")
def test(
    file: Path = typer.Option(Path("stack.yaml"), "-f", "--file", help="The stack file."),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Only this model's tests (repeatable)."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Only this target (repeatable)."),
    pattern: Optional[str] = typer.Option(None, "-k", help="Only tests whose model::name contains PATTERN (or matches it as a glob)."),
    plan: bool = typer.Option(False, "--plan", help="Compare the current and the proposed version of every model the plan changes."),
    fmt: str = typer.Option("text", "--format", help="text, json, junit or markdown."),
) -> None:
    """Run the prompt regression tests of the stack (or, with --plan, before → after a change)."""
    import httpx

    try:
        code = _test(file, model or [], target or [], pattern, plan, fmt)
    except (CorralError, httpx.HTTPError) as exc:
        print(f"Error: {exc or type(exc).__name__}", file=sys.stderr)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _test(file: Path, models: list[str], only: list[str], pattern: Optional[str], plan: bool, fmt: str) -> int:
    from toolchain.stack.load import load
    from toolchain.stack.state import key_of
    from toolchain.stack.targets import targets
    from toolchain.stacktest import report
    from toolchain.stacktest.collect import collect, select

    if fmt not in report.FORMATS:
        raise CorralError(f"unknown format {fmt!r}; use one of: {', '.join(report.FORMATS)}")
    loaded = load(file)
    declared = {key_of(n) for n in loaded.stack.models}
    for m in models:
        if key_of(m) not in declared:
            raise loaded.error(f"--model {m}: the stack declares no such model")
    tests = select(collect(loaded), models, pattern)
    chosen = targets(loaded, only)
    parallel = loaded.stack.runtime.num_parallel or DEFAULT_PARALLEL
    if plan:
        comparisons = _compare(loaded, chosen, tests, parallel)
        typer.echo(report.render_compare(comparisons, fmt), nl=False)
        after = [p.after for c in comparisons for p in c.pairs]
        if any(c.error or c.leftovers for c in comparisons) or any(r.outcome == "error" for r in after) or any(
            p.before is not None and p.before.outcome == "error" for c in comparisons for p in c.pairs
        ):
            return 2
        return 1 if any(r.outcome == "fail" for r in after) else 0
    runs = _run(chosen, tests, parallel)
    typer.echo(report.render(runs, fmt), nl=False)
    if any(r.error for r in runs):
        return 2
    from toolchain.stacktest.run import exit_code

    return exit_code([r for run in runs for r in run.results])


def _run(chosen: list, tests: list, parallel: int) -> list:
    from toolchain.stacktest.report import TargetRun
    from toolchain.stacktest.run import Job, lanes, run

    runs = []
    for t in chosen:
        with t.client(timeout=600) as client:
            try:
                client.version()
            except CorralError as exc:
                runs.append(TargetRun(t.name, t.url, error=str(exc)))
                continue
            lane = lanes(client, [x.model for x in tests])
            results = run(client, [Job(x, x.model, lane[x.model]) for x in tests], parallel)
        runs.append(TargetRun(t.name, t.url, results))
    return runs


def _compare(loaded, chosen: list, tests: list, parallel: int) -> list:  # noqa: ANN001
    from toolchain.stack.desired import build
    from toolchain.stack.targets import plan_target
    from toolchain.stacktest.compare import TargetComparison, compare_target

    desired = build(loaded)
    out = []
    for t in chosen:
        with t.client(timeout=600) as client:
            try:
                plan = plan_target(desired, t, client, loaded.stack.prune)
            except CorralError as exc:
                out.append(TargetComparison(t.name, t.url, error=str(exc)))
                continue
            echo = (lambda s: typer.echo(s, err=True))
            out.append(compare_target(plan, tests, client, parallel=parallel, echo=echo))
    return out


def apply_then_test(do_apply, plan_file: Optional[Path], file: Path, only: list[str]) -> int:  # noqa: ANN001
    """`stack apply --test`: apply, then run the stack's tests on the applied targets.

    Nothing is rolled back: a failure names the models whose tests fail and how to revert them.
    Exit codes: those of `stack apply`, else 0 / 1 (a test fails) / 2 (errors).
    """
    import json

    from toolchain.stack.load import load
    from toolchain.stack.targets import targets
    from toolchain.stacktest import report
    from toolchain.stacktest.collect import collect

    do_apply()
    if plan_file is not None:  # a saved plan names its stack file
        try:
            file = Path(json.loads(plan_file.read_text(encoding="utf-8")).get("stack") or file)
        except (OSError, ValueError) as exc:
            raise CorralError(f"cannot read saved plan {plan_file}: {exc}") from None
    try:
        loaded = load(file)
        tests = collect(loaded)
        chosen = targets(loaded, only)
        typer.echo(f"\nTesting {len(tests)} test(s) on {len(chosen)} target(s) ...")
        runs = _run(chosen, tests, loaded.stack.runtime.num_parallel or DEFAULT_PARALLEL)
    except CorralError as exc:
        print(f"Error: the apply is done, but the tests could not run: {exc}", file=sys.stderr)
        return 2
    typer.echo(report.render_text(runs), nl=False)
    from toolchain.stacktest.run import exit_code

    code = 2 if any(r.error for r in runs) else exit_code([r for run in runs for r in run.results])
    failing = sorted({f"{run.target}: {r.test.model}" for run in runs for r in run.results if r.outcome != "pass"})
    if failing:
        typer.echo(
            "\nTests fail after the apply on " + ", ".join(failing) + ". Nothing was rolled back. To revert, "
            f"revert the change in git (git revert <commit>) and run: stack apply -f {file}",
            err=True,
        )
    return code
