"""The shipped team stack (stacks/team/stack.yaml) rendered to a directory, for the tools that check it.

`render_team(out, **changes)` writes its public files (what `stack render --check` compares;
no secret is needed) plus empty stand-ins for the secret files that compose's `env_file:`
and volumes name, and returns the rendered `{path: text}`. `changes` replace fields of the
`RenderInput` (e.g. the executables' paths, which `systemd-analyze verify` checks exist).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.server import REPO_ROOT
from toolchain.render import render_public, secret_paths
from toolchain.render.from_stack import render_input
from toolchain.stack.load import load

STACK = REPO_ROOT / "stacks" / "team" / "stack.yaml"
ENV = {"GEMMA_GGUF": "/models/gemma.gguf", "CORRAL_TOKEN": "team-token-0123456789"}


def render_team(out: Path, **changes: Any) -> dict[str, str]:
    inp = render_input(load(STACK, env=ENV))
    if changes:
        inp = inp.model_copy(update=changes)
    files = render_public(inp)
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for rel in secret_paths(inp):
        (out / rel).touch(mode=0o600)
    return files
