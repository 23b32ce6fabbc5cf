"""Open WebUI beside the server: its environment files and the presets (`models.json`).

`open-webui/open-webui.env` holds what a team server needs and nothing else, with
`ENABLE_PERSISTENT_CONFIG=false` so the stack stays the source of truth after the first
boot; `open-webui/secrets.env` (0600) holds the admin password, the stable secret key and
the bearer token Open WebUI sends through the proxy. Values are single-quoted, which
systemd's `EnvironmentFile=` and compose's `env_file:` both read literally.

`models.json` is the body of Open WebUI's `POST /api/v1/models/sync` (0.12.x): it
creates, updates and deletes presets in one transaction. `user_id` is replaced by the
syncing admin's id on the server side; timestamps are 0 so the file is deterministic.
"""

from __future__ import annotations

import json
from typing import Optional

from toolchain.render.model import RenderInput, WebUIConfig, split_hostport
from toolchain.render.secrets import Secrets

__all__ = ["ENV", "MODELS", "SECRETS_ENV", "models_body", "ollama_urls", "render", "render_secrets", "ui_id"]

ENV = "open-webui/open-webui.env"
SECRETS_ENV = "open-webui/secrets.env"
MODELS = "open-webui/models.json"

# The routes `stack plan` (GET .../all) and `stack apply` (POST .../sync) call with the admin key.
SYNC_ENDPOINTS = "/api/v1/models"

_HEADER = "# Rendered by Corral (`stack render`) from the stack file. Do not edit.\n"


def _line(key: str, value: str) -> str:
    if "'" in value or "\n" in value:
        raise ValueError(f"{key} cannot be written to an env file: it contains a quote or a newline")
    return f"{key}='{value}'\n"


def _enabled(inp: RenderInput) -> Optional[WebUIConfig]:
    return inp.webui if inp.webui is not None and inp.webui.enabled else None


def ollama_urls(inp: RenderInput) -> list[str]:
    """Where Open WebUI reaches the model server: the proxy (one URL) or every replica."""
    ui = _enabled(inp)
    assert ui is not None
    if ui.ollama_url:
        return [ui.ollama_url]
    proxy = inp.proxy
    if proxy is None:
        return [f"http://{r}" for r in inp.replicas]
    host, port = split_hostport(proxy.listen)
    if proxy.tls is not None:
        suffix = "" if port == 443 else f":{port}"
        return [f"https://{proxy.server_name}{suffix}"]
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return [f"http://{host}:{port}"]


def ui_id(name: str) -> str:
    """A declared model's id in Open WebUI: the name the server's /api/tags shows (`tiny:latest`)."""
    from toolchain.names import parse_name

    return parse_name(name).display_shortest()


def _default_id(ui: WebUIConfig, name: str) -> str:
    """A default model is a preset id (kept as written) or a declared model (its UI id)."""
    return name if any(p.id == name for p in ui.presets) else ui_id(name)


def _order(inp: RenderInput, ui: WebUIConfig) -> list[str]:
    order: list[str] = []
    ids = [*(_default_id(ui, n) for n in ui.default_models), *(p.id for p in ui.presets), *map(ui_id, inp.models)]
    for name in ids:
        if name not in order:
            order.append(name)
    return order


def render(inp: RenderInput) -> dict[str, str]:
    ui = _enabled(inp)
    if ui is None:
        return {}
    urls = ollama_urls(inp)
    env = [_HEADER, "# Secrets (admin password, secret key, proxy token) are in secrets.env.\n"]
    env.append(_line("ENABLE_PERSISTENT_CONFIG", "false"))
    # No downloads at run time (Hugging Face models, pip requirements of tools, update checks):
    # the image/package is pinned by the stack; the image ships its embedding model.
    env.append(_line("OFFLINE_MODE", "true"))
    env.append(_line("ENABLE_OLLAMA_API", "true"))
    if len(urls) == 1:
        env.append(_line("OLLAMA_BASE_URL", urls[0]))
    else:
        env.append(_line("OLLAMA_BASE_URLS", ";".join(urls)))
    env.append(_line("ENABLE_OPENAI_API", "false"))
    env.append(_line("WEBUI_URL", ui.public_url))
    env.append(_line("CORS_ALLOW_ORIGIN", ui.public_url))
    env.append(_line("ENABLE_SIGNUP", "false"))
    env.append(_line("WEBUI_ADMIN_EMAIL", ui.admin_email))
    env.append(_line("WEBUI_ADMIN_NAME", ui.admin_name))
    if ui.default_models:
        env.append(_line("DEFAULT_MODELS", ",".join(_default_id(ui, n) for n in ui.default_models)))
    if ui.task_model:
        env.append(_line("TASK_MODEL", ui_id(ui.task_model)))
    env.append(_line("MODEL_ORDER_LIST", json.dumps(_order(inp, ui))))
    if ui.admin_key_env:
        # `stack apply` syncs presets with an admin's API key; API keys reach the model routes only.
        env.append(_line("ENABLE_API_KEYS", "true"))
        env.append(_line("ENABLE_API_KEYS_ENDPOINT_RESTRICTIONS", "true"))
        env.append(_line("API_KEYS_ALLOWED_ENDPOINTS", SYNC_ENDPOINTS))
    return {ENV: "".join(env), MODELS: json.dumps(models_body(inp), indent=2) + "\n"}


def render_secrets(inp: RenderInput, secrets: Secrets) -> dict[str, str]:
    ui = _enabled(inp)
    if ui is None:
        return {}
    assert secrets.admin_password is not None and secrets.webui_secret_key is not None
    env = ["# Rendered by Corral: SECRET (mode 0600): never commit or share.\n"]
    env.append(_line("WEBUI_ADMIN_PASSWORD", secrets.admin_password))
    env.append(_line("WEBUI_SECRET_KEY", secrets.webui_secret_key))
    if ui.client is not None and ui.client in secrets.tokens:
        configs = {"0": {"enable": True, "key": secrets.tokens[ui.client]}}
        env.append(_line("OLLAMA_API_CONFIGS", json.dumps(configs, separators=(",", ":"))))
    return {SECRETS_ENV: "".join(env)}


def _read_for_everyone(model_id: str) -> list[dict]:
    return [
        {
            "id": f"{model_id}:read:everyone",
            "resource_type": "model",
            "resource_id": model_id,
            "principal_type": "user",
            "principal_id": "*",
            "permission": "read",
            "created_at": 0,
        }
    ]


def models_body(inp: RenderInput) -> dict:
    """The `POST /api/v1/models/sync` body: every preset, then every hidden base model."""
    ui = _enabled(inp)
    assert ui is not None
    models = []
    for p in ui.presets:
        params: dict = {}
        if p.system is not None:
            params["system"] = p.system
        params.update(p.params)
        meta: dict = {"description": p.description, "tags": [{"name": t} for t in p.tags]}
        if p.hidden:
            meta["hidden"] = True
        models.append(
            {
                "id": p.id,
                "user_id": "",
                "base_model_id": ui_id(p.model),
                "name": p.name,
                "params": params,
                "meta": meta,
                "access_grants": _read_for_everyone(p.id),
                "is_active": True,
                "created_at": 0,
                "updated_at": 0,
            }
        )
    for name in map(ui_id, ui.hidden_models):
        models.append(
            {
                "id": name,
                "user_id": "",
                "base_model_id": None,
                "name": name,
                "params": {},
                "meta": {"hidden": True},
                "access_grants": _read_for_everyone(name),
                "is_active": True,
                "created_at": 0,
                "updated_at": 0,
            }
        )
    return {"models": models}
