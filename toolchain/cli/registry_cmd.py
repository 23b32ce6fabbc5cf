"""`stack pull NAME [--insecure]` and `stack push NAME [--insecure]`, like `ollama pull/push`.

The server at `OLLAMA_HOST` does the transfer (`POST /api/pull`, `POST /api/push`); this
command shows its streamed progress: a rich progress bar per blob, other statuses as lines,
all on stderr. An error line from the server becomes the command's one-line error.
"""

from __future__ import annotations

import typer

from toolchain.cli import app
from toolchain.progress import show_progress
from toolchain.client import Client

INSECURE_HELP = "Use plain HTTP to reach the registry (HTTPS by default)."


@app.command("pull")
def pull(
    model: str = typer.Argument(..., help="Model to pull, e.g. 127.0.0.1:11434/team/support-bot:v2."),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
) -> None:
    """Pull a model from a registry (another `stack serve`, Ollama's registry, any v2 registry)."""
    with Client() as client:
        show_progress(client.pull(model, insecure=insecure))


@app.command("push")
def push(
    model: str = typer.Argument(..., help="Model to push; its host part names the registry."),
    insecure: bool = typer.Option(False, "--insecure", help=INSECURE_HELP),
) -> None:
    """Push a model to a registry (`stack cp` it to `<host>/<namespace>/<model>:<tag>` first)."""
    with Client() as client:
        show_progress(client.push(model, insecure=insecure))
