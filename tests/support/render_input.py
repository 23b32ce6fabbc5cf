"""Ready-made `RenderInput` values and the environment they need, for the render tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.render.model import RenderInput

TOKENS = {
    "ALICE_TOKEN": "alice-0123456789abcdef",
    "OPS_TOKEN": "ops.0123456789+abcdef/XYZ==",
    "WEBUI_TOKEN": "webui_0123456789abcdef",
}


def stack_data(secret_key_file: Path, **overrides: Any) -> dict:
    data: dict[str, Any] = {
        "replicas": ["127.0.0.1:11434", "127.0.0.1:11435"],
        "models": ["gemma3:270m", "tiny", "support-bot"],
        "proxy": {
            "listen": "127.0.0.1:8080",
            "clients": [
                {"name": "alice", "scope": "user", "token_env": "ALICE_TOKEN"},
                {"name": "ops", "scope": "admin", "token_env": "OPS_TOKEN"},
                {"name": "webui", "scope": "user", "token_env": "WEBUI_TOKEN"},
            ],
        },
        "webui": {
            "public_url": "https://chat.example.org",
            "client": "webui",
            "admin_email": "admin@example.org",
            "admin_password_env": "WEBUI_ADMIN_PASSWORD",
            "secret_key_file": str(secret_key_file),
            "default_models": ["helpdesk"],
            "hidden_models": ["tiny"],
            "presets": [
                {
                    "id": "helpdesk",
                    "model": "support-bot",
                    "name": "Helpdesk",
                    "description": "Answers IT questions",
                    "system": "You answer the team's IT questions.",
                    "params": {"temperature": 0.2, "num_ctx": 4096},
                    "tags": ["team"],
                }
            ],
        },
    }
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def environment(**extra: str) -> dict[str, str]:
    return {**TOKENS, "WEBUI_ADMIN_PASSWORD": "a-long-admin-password", **extra}


def make(secret_key_file: Path, **overrides: Any) -> RenderInput:
    return RenderInput.model_validate(stack_data(secret_key_file, **overrides))
