"""Turns any exception reaching the CLI into one line on stderr and an exit code.

Does not import click: typer vendors its own copy, and a toolchain-only install has no
separate click package. Click's usage errors are recognised by their `show`/`exit_code`.
"""

from __future__ import annotations

import sys

import typer


def report(exc: BaseException) -> int:
    if isinstance(exc, (typer.Abort, KeyboardInterrupt)):
        print("Aborted.", file=sys.stderr)
        return 130
    show = getattr(exc, "show", None)
    exit_code = getattr(exc, "exit_code", None)
    if callable(show) and isinstance(exit_code, int):  # a click usage error
        show()
        return exit_code
    if isinstance(exc, ModuleNotFoundError) and exc.name in _SERVER_EXTRA:
        print(
            f"Error: this command needs the server extra ({exc.name} is not installed): "
            "pip install 'corral[server]' or scripts/install",
            file=sys.stderr,
        )
        return 1
    message = str(exc) or exc.__class__.__name__
    print(f"Error: {message}", file=sys.stderr)
    return 1


_SERVER_EXTRA = {"fastapi", "uvicorn", "llama_cpp", "gguf", "numpy", "jinja2", "starlette", "prometheus_client"}
