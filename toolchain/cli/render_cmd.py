"""`stack render`: write the team server's edge (nginx, Open WebUI, compose, systemd) from the stack.

Exit codes: 0 written (or, with --check, up to date); 1 an error, or with --check a diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_FILE = "stack.yaml"


def render(
    file: Path = typer.Option(Path(DEFAULT_FILE), "-f", "--file", help="The stack file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: rendered/ beside the stack file)."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 with a unified diff when the files on disk differ."),
) -> None:
    """Render nginx, Open WebUI, compose and systemd files from the stack (deterministic)."""
    from toolchain.render import render_public, render_secret
    from toolchain.render import files
    from toolchain.render.from_stack import default_out_dir, render_input
    from toolchain.render.secrets import collect
    from toolchain.stack.load import WorkTree, load_text

    path = Path(file)
    if not path.is_file():
        from toolchain.stack.load import StackError

        raise StackError(f"stack file {file} not found")
    tree, rel = WorkTree.for_file(path)
    loaded = load_text(tree.read_text(rel), tree, rel, strict_env=_read_by_render)
    inp = render_input(loaded)
    out_dir = out if out is not None else default_out_dir(loaded) or path.parent / "rendered"
    public = render_public(inp)
    if check:
        diff = files.check(out_dir, public)
        if diff:
            typer.echo(diff, nl=False)
            typer.echo(f"{out_dir}: rendered files differ from the stack; run `stack render` to update them.", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out_dir}: rendered files are up to date.")
        return
    secrets = collect(inp)
    secret = render_secret(inp, secrets)
    written = files.write(out_dir, public, secret)
    typer.echo(f"Rendered {len(written)} files into {out_dir} ({len(secret)} secret, mode 0600).")


def _read_by_render(loc: tuple) -> bool:
    """Whether a value at `loc` reaches the rendered files, so an unset ${VAR} in it is an error.

    Render reads the `proxy` and `webui` sections and the targets' URLs (the replicas); a
    literal ${VAR} must never be rendered. Anything else (target tokens, models' sources) may
    stay unset: CI renders (`--check`) without those secrets and paths.
    """
    return loc[:1] in (("proxy",), ("webui",)) or (loc[:1] == ("targets",) and loc[2:] == ("url",))


def register(app: typer.Typer) -> None:
    app.command("render")(render)
