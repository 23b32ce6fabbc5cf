"""`stack keys add|list|revoke`: the API keys of a `stack serve` (the keys file, `toolchain.keys`).

These edit the keys file directly (`CORRAL_KEYS_FILE`, default ~/.corral/keys.json); a running
server notices the change within a second, no restart needed.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from toolchain import keys as keyfile
from toolchain.cli._table import table

app = typer.Typer(help="Manage the API keys of `stack serve` (the keys file).", no_args_is_help=True)


def _path(file: Optional[str]):
    from pathlib import Path

    return Path(file).expanduser() if file else keyfile.default_path()


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Who the key is for (shown in the server's access log)."),
    scope: str = typer.Option("user", "--scope", help="user (inference and reads) or admin (also management)."),
    file: Optional[str] = typer.Option(None, "--file", help="Keys file (default $CORRAL_KEYS_FILE or ~/.corral/keys.json)."),
) -> None:
    """Create a key and print its token once (only its SHA-256 is stored)."""
    path = _path(file)
    token = keyfile.add(path, name, scope)
    print(f"added {scope} key {name!r} to {path}; the token is shown only now:", file=sys.stderr)
    typer.echo(token)


@app.command("list")
def list_keys(
    file: Optional[str] = typer.Option(None, "--file", help="Keys file (default $CORRAL_KEYS_FILE or ~/.corral/keys.json)."),
) -> None:
    """List the keys (names, scopes, creation times; never tokens)."""
    keys = keyfile.load(_path(file))
    typer.echo(table([["NAME", "SCOPE", "CREATED"], *([k.name, k.scope, k.created] for k in keys)]), nl=False)


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The key to remove."),
    file: Optional[str] = typer.Option(None, "--file", help="Keys file (default $CORRAL_KEYS_FILE or ~/.corral/keys.json)."),
) -> None:
    """Remove a key; requests with its token are refused from now on."""
    path = _path(file)
    key = keyfile.revoke(path, name)
    print(f"revoked {key.scope} key {key.name!r} in {path}", file=sys.stderr)
