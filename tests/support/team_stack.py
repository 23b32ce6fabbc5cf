"""The shipped team stack (stacks/team/stack.yaml) rendered, for the tools that check it.

`render_team(out, **changes)` writes its public files (what `stack render --check` compares;
no secret is needed) plus empty stand-ins for the secret files that compose's `env_file:`
and volumes name, and returns the rendered `{path: text}`. `changes` replace fields of the
`RenderInput` (e.g. the executables' paths, which `systemd-analyze verify` checks exist).

`write_committed()` regenerates `stacks/team/rendered/`, the set committed beside the stack
(what `stack render` writes on the proxy host, minus the secret files, which its `.gitignore`
keeps out of git): ``python -m tests.support.team_stack``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.server import REPO_ROOT
from toolchain.render import files, render_public, render_secret, secret_paths
from toolchain.render.from_stack import render_input
from toolchain.render.secrets import Secrets
from toolchain.stack.load import load

STACK = REPO_ROOT / "stacks" / "team" / "stack.yaml"
COMMITTED = STACK.parent / "rendered"
ENV = {"GEMMA_GGUF": "/models/gemma.gguf", "CORRAL_TOKEN": "team-token-0123456789"}


def render_team(out: Path, **changes: Any) -> dict[str, str]:
    inp = render_input(load(STACK, env=ENV))
    if changes:
        inp = inp.model_copy(update=changes)
    rendered = render_public(inp)
    for rel, text in rendered.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for rel in secret_paths(inp):
        (out / rel).touch(mode=0o600)
    return rendered


def write_committed() -> None:
    """`stacks/team/rendered/` as `stack render` writes it, with placeholder secrets then removed."""
    inp = render_input(load(STACK, env=ENV))
    token = iter(f"placeholder-{i}-0123456789abcdef" for i in range(100))
    placeholders = Secrets(
        tokens={c.name: next(token) for c in inp.proxy.clients if c.token_env} if inp.proxy else {},
        admin_password="placeholder",
        webui_secret_key="placeholder-0123456789abcdef",
        upstream_token=next(token),
    )
    # No nginx -t: the TLS files the config names live on the proxy host.
    files.write(COMMITTED, render_public(inp), render_secret(inp, placeholders), validate=False)
    for rel in secret_paths(inp):
        (COMMITTED / rel).unlink()


if __name__ == "__main__":
    write_committed()
    print(f"wrote {COMMITTED.relative_to(REPO_ROOT)}")
