"""``stack modelfile fmt|check``: format and lint Modelfiles without a server.

``fmt`` rewrites each file in Ollama's canonical form (upper-case keywords, one
instruction per line, values quoted only where needed) keeping comments and
blank lines; files are replaced atomically and only when they change. ``fmt
--check`` changes nothing and lists the files it would change (exit 1 if any).
``-`` formats standard input to standard output.

``check`` parses each file and checks what ``ollama create`` would refuse:
parameter names and types, REQUIRES, FROM names, and that local FROM/ADAPTER/
DRAFT paths exist (relative to the Modelfile). Each problem is one line
``path:line: message`` on standard output; warnings (deprecated parameters)
go to standard error as ``path:line: warning: ...``. Exit 1 on any error.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import List

import typer

from toolchain.modelfile import ModelfileError, check, format, parse

app = typer.Typer(
    name="modelfile",
    help="Format and check Modelfiles (Ollama's syntax).",
    no_args_is_help=True,
)

_STDIN = "-"


def _location(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line else path


def _read(path: str) -> bytes:
    if path == _STDIN:
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=".modelfile-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _same_text(data: bytes, text: str) -> bool:
    try:
        return data.decode("utf-8") == text
    except UnicodeDecodeError:
        return False


@app.command("fmt")
def fmt_command(
    files: List[str] = typer.Argument(..., metavar="FILE...", help="Modelfiles to format ('-' = stdin to stdout)."),
    check_only: bool = typer.Option(
        False, "--check", help="Change nothing; list the files that would change and exit 1 if any."
    ),
) -> None:
    """Rewrite Modelfiles in canonical form, keeping comments."""
    failed = False
    would_change: list[str] = []
    for path in files:
        try:
            data = _read(path)
            text = format(parse(data), keep_comments=True)
        except ModelfileError as exc:
            typer.echo(f"{_location(path, exc.line)}: {exc.detail}", err=True)
            failed = True
            continue
        except OSError as exc:
            typer.echo(f"{path}: {exc.strerror or exc}", err=True)
            failed = True
            continue
        if path == _STDIN:
            if check_only:
                if not _same_text(data, text):
                    would_change.append(path)
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
            continue
        if _same_text(data, text):
            continue
        if check_only:
            would_change.append(path)
            continue
        try:
            _write_atomically(path, text)
        except OSError as exc:
            typer.echo(f"{path}: {exc.strerror or exc}", err=True)
            failed = True
    for path in would_change:
        typer.echo(path)
    if failed or would_change:
        raise typer.Exit(1)


@app.command("check")
def check_command(
    files: List[str] = typer.Argument(..., metavar="FILE...", help="Modelfiles to check ('-' = stdin)."),
) -> None:
    """Report what `ollama create` would refuse in each Modelfile: path:line: message."""
    failed = False
    for path in files:
        base_dir = os.getcwd() if path == _STDIN else os.path.dirname(os.path.abspath(path))
        try:
            modelfile = parse(_read(path))
        except ModelfileError as exc:
            typer.echo(f"{_location(path, exc.line)}: {exc.detail}")
            failed = True
            continue
        except OSError as exc:
            typer.echo(f"{path}: {exc.strerror or exc}")
            failed = True
            continue
        result = check(modelfile, base_dir)
        for line, warning in result.warnings:
            typer.echo(f"{_location(path, line)}: warning: {warning}", err=True)
        for error in result.errors:
            typer.echo(f"{_location(path, error.line)}: {error.detail}")
        failed = failed or bool(result.errors)
    if failed:
        raise typer.Exit(1)
