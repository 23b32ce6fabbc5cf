"""Rendering the team server's edge from the stack: nginx, Open WebUI, compose, systemd.

Pure part: `render_public(inp)` and `render_secret(inp, secrets)` map a `RenderInput`
to ``{relative path: text}`` (same input → byte-identical text). I/O part:
`secrets.collect` reads variables and files, `files.write` / `files.check` put the result
on disk atomically or diff it against what is there.
"""

from __future__ import annotations

from toolchain.render import compose, nginx, systemd, webui
from toolchain.render.model import ProxyConfig, RenderInput, WebUIConfig
from toolchain.render.secrets import RenderError, Secrets

GITIGNORE = ".gitignore"

__all__ = [
    "GITIGNORE",
    "ProxyConfig",
    "RenderError",
    "RenderInput",
    "Secrets",
    "WebUIConfig",
    "render_public",
    "render_secret",
    "secret_paths",
]


def render_public(inp: RenderInput) -> dict[str, str]:
    """Every file that holds no secret (safe to commit and to diff in CI)."""
    out: dict[str, str] = {}
    for part in (nginx.render(inp), webui.render(inp), compose.render(inp), systemd.render(inp)):
        out.update(part)
    secret = secret_paths(inp)
    if secret:
        out[GITIGNORE] = (
            "# Secret files written by `stack render` (mode 0600) and nginx's runtime files: never commit them.\n"
            + "".join(f"/{rel}\n" for rel in secret)
            + f"/{nginx.RUNTIME_DIR}/\n"
        )
    return dict(sorted(out.items()))


def secret_paths(inp: RenderInput) -> list[str]:
    """The relative paths `render_secret` produces (known without reading any secret)."""
    out = []
    if inp.proxy is not None and inp.proxy.tokens_file is None:
        out.append(nginx.TOKENS_CONF)
    if inp.proxy is not None and inp.proxy.upstream_token_env is not None:
        out.append(nginx.UPSTREAM_CONF)
    if inp.webui is not None and inp.webui.enabled:
        out.append(webui.SECRETS_ENV)
    return sorted(out)


def render_secret(inp: RenderInput, secrets: Secrets) -> dict[str, str]:
    """The files written with mode 0600: the token map and Open WebUI's secrets."""
    out: dict[str, str] = {}
    if inp.proxy is not None and inp.proxy.tokens_file is None:
        out.update(nginx.render_tokens(inp.proxy, secrets.tokens))
    if inp.proxy is not None and inp.proxy.upstream_token_env is not None:
        assert secrets.upstream_token is not None
        out.update(nginx.render_upstream_auth(secrets.upstream_token))
    out.update(webui.render_secrets(inp, secrets))
    return dict(sorted(out.items()))
