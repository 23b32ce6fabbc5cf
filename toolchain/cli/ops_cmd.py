"""Operations commands: `stack fsck` (a model store on disk) and `stack doctor` (running servers)."""

from __future__ import annotations

import json
import os
from typing import List, Optional

import typer

from toolchain.cli import app
from toolchain.errors import CorralError


@app.command("fsck")
def fsck(
    repair: bool = typer.Option(False, "--repair", help="Remove temp files, partial downloads and stale upload sessions."),
    models: Optional[str] = typer.Option(None, "--models", help="The store (default $OLLAMA_MODELS or ~/.ollama/models)."),
    grace: float = typer.Option(60.0, "--grace", help="Seconds a leftover must be old before --repair removes it."),
    quick: bool = typer.Option(False, "--quick", help="Skip re-hashing every blob."),
    format: str = typer.Option("text", "--format", help="text or json."),
) -> None:
    """Check a model store: manifests parse, their blobs exist and hash to their names.

    Works on the directory itself (server stopped or running); exit 1 when the store is unsound.
    """
    if format not in ("text", "json"):
        raise CorralError(f"unknown format {format!r}: use text or json")
    from server.config import parse_models  # lazy: the toolchain never imports the server otherwise
    from server.fsck import fsck as run_fsck
    from server.fsck import render

    root = parse_models((models or os.environ.get("OLLAMA_MODELS", "")).strip().strip("\"'"))
    try:
        report = run_fsck(root, repair=repair, grace_seconds=grace, hash_blobs=not quick)
    except FileNotFoundError as exc:
        raise CorralError(str(exc)) from None
    typer.echo(json.dumps(report.to_json(), indent=2) if format == "json" else render(report), nl=format == "json")
    if not report.clean:
        raise typer.Exit(1)


@app.command("doctor")
def doctor(
    file: Optional[str] = typer.Option(None, "-f", "--file", help="Also check the models a stack file declares."),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", help="Only this target of the stack (repeatable)."),
    host: Optional[str] = typer.Option(None, "--host", help="Server, without a stack file (default $OLLAMA_HOST)."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for each answer."),
    min_free: float = typer.Option(1.0, "--min-free", help="GiB the store's filesystem must have free."),
    format: str = typer.Option("text", "--format", help="text or json."),
) -> None:
    """Check servers: reachable, version, whether a key is needed and the token accepted, the models,
    the store's free disk space.

    With -f, every target of the stack file, and for each declared model: present as declared,
    and a one-token generation answers. Exit 1 when any check fails.
    """
    if format not in ("text", "json"):
        raise CorralError(f"unknown format {format!r}: use text or json")
    from toolchain import doctor as checks_mod

    floor = int(min_free * (1 << 30))
    if file is not None:
        from toolchain.stack.load import load

        checks = checks_mod.stack_checks(load(file), target or (), timeout=timeout, min_free=floor)
    else:
        if target:
            raise CorralError("--target needs a stack file (-f)")
        checks = checks_mod.run_checks(host, timeout=timeout, min_free=floor)
    if format == "json":
        typer.echo(json.dumps({"ok": all(c.ok for c in checks), "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        from toolchain.cli._table import table

        if file is not None:
            rows = [["TARGET", "CHECK", "STATUS", "DETAIL"], *([c.target, c.name, c.status, c.detail] for c in checks)]
        else:
            rows = [["CHECK", "STATUS", "DETAIL"], *([c.name, c.status, c.detail] for c in checks)]
        typer.echo(table(rows), nl=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
