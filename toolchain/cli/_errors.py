"""Turns any exception reaching the CLI into one line on stderr and an exit code."""

from __future__ import annotations

import sys

import click


def report(exc: BaseException) -> int:
    if isinstance(exc, click.exceptions.Abort):
        print("Aborted.", file=sys.stderr)
        return 130
    if isinstance(exc, click.ClickException):
        exc.show()
        return exc.exit_code
    message = str(exc) or exc.__class__.__name__
    print(f"Error: {message}", file=sys.stderr)
    return 1
