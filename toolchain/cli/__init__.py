"""The `stack` command line.

Each command group lives in its own module and registers itself on `app` here.
Every command exits non-zero with one clear line on error (see `toolchain.cli._errors`).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import typer

from toolchain import __version__

app = typer.Typer(
    name="stack",
    help="GitOps for a team's local LLMs: stacks, plan/apply, and an Ollama-compatible server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """GitOps for a team's local LLMs."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `stack` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # with standalone_mode=False click returns the code of a `raise typer.Exit(n)`
        code = app(args=args, prog_name="stack", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click's usage errors
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - the one place errors become CLI lines
        from toolchain.cli._errors import report

        return report(exc)
    return code if isinstance(code, int) else 0


# Command modules register themselves on `app` when imported (or through `register`).
from toolchain.cli import models_cmd as _models_cmd  # noqa: E402,F401  (serve, create, list, show, cp, rm)
from toolchain.cli import prompt_cmd as _prompt_cmd  # noqa: E402,F401  (stack prompt)
from toolchain.cli import registry_cmd as _registry_cmd  # noqa: E402,F401  (stack pull, stack push)
from toolchain.cli import render_cmd as _render_cmd  # noqa: E402  (stack render)
from toolchain.cli import run_cmd as _run_cmd  # noqa: E402,F401  (stack run, ps, stop)
from toolchain.cli import stack_cmd as _stack_cmd  # noqa: E402  (stack plan/apply/diff/lock/init/schema)
from toolchain.cli.modelfile_cmd import app as _modelfile_app  # noqa: E402

app.add_typer(_modelfile_app, name="modelfile")  # stack modelfile fmt|check
from toolchain.cli import ops_cmd as _ops_cmd  # noqa: E402,F401  (stack fsck, stack doctor)
from toolchain.cli.keys_cmd import app as _keys_app  # noqa: E402

app.add_typer(_keys_app, name="keys")  # stack keys add|list|revoke
_stack_cmd.register(app)
_render_cmd.register(app)
from toolchain.cli import stacktest_cmd as _stacktest_cmd  # noqa: E402,F401  (stack test)
