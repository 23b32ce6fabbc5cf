"""Hardened systemd units: `systemd/corral.service` and, with the UI on, `systemd/open-webui.service`.

Both run as a dedicated user with a read-only system (`ProtectSystem=strict`); the only
writable paths are the model store (Corral) and Open WebUI's state directory. A store
under /var/lib/ is also the unit's `StateDirectory=`, so systemd creates it owned by the
service user (a `ReadWritePaths=` that does not exist fails the unit at start). System
calls are limited to systemd's `@system-service` set without `@privileged` (EPERM, not a
kill, for the rest). `corral.service` listens on the first replica's address and reads
its keys from `<install_dir>/keys.json`; on each replica host, set `OLLAMA_HOST` in
`<install_dir>/corral.env` (read after the unit's own environment).

`tests/test_render_systemd.py` runs `systemd-analyze verify` and `systemd-analyze
security --offline` on the units of the shipped team stack.
"""

from __future__ import annotations

from toolchain.render.model import RenderInput, split_hostport
from toolchain.render.webui import ENV, SECRETS_ENV

__all__ = ["CORRAL_UNIT", "WEBUI_UNIT", "render"]

CORRAL_UNIT = "systemd/corral.service"
WEBUI_UNIT = "systemd/open-webui.service"

_HEADER = "# Rendered by Corral (`stack render`) from the stack file. Do not edit.\n"

_HARDENING = """NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
UMask=0027
ProtectProc=invisible
PrivateMounts=yes
RemoveIPC=yes
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
"""


def _state_directory(path: str) -> str:
    """`StateDirectory=` for a path under /var/lib/ (systemd creates it, owned by User=), else ''."""
    prefix = "/var/lib/"
    rel = path.rstrip("/")[len(prefix):] if path.startswith(prefix) else ""
    return f"StateDirectory={rel}\n" if rel else ""


def render(inp: RenderInput) -> dict[str, str]:
    out = {CORRAL_UNIT: _corral(inp)}
    if inp.webui is not None and inp.webui.enabled:
        out[WEBUI_UNIT] = _webui(inp)
    return out


def _corral(inp: RenderInput) -> str:
    return (
        _HEADER
        + "[Unit]\n"
        "Description=Corral model server (stack serve)\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        "User=corral\n"
        "Group=corral\n"
        f"Environment=OLLAMA_HOST={inp.replicas[0]}\n"
        f"Environment=OLLAMA_MODELS={inp.store}\n"
        f"Environment=CORRAL_KEYS_FILE={inp.install_dir}/keys.json\n"
        f"EnvironmentFile=-{inp.install_dir}/corral.env\n"
        f"ExecStart={inp.stack_bin} serve\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        + _state_directory(inp.store)
        + f"ReadWritePaths={inp.store}\n"
        + _HARDENING
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def _webui(inp: RenderInput) -> str:
    ui = inp.webui
    assert ui is not None
    host, port = split_hostport(ui.listen)
    host = host.strip("[]")
    state = "/var/lib/open-webui"
    return (
        _HEADER
        + "[Unit]\n"
        "Description=Open WebUI for the Corral team server\n"
        "After=network-online.target corral.service\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        "User=open-webui\n"
        "Group=open-webui\n"
        "StateDirectory=open-webui\n"
        f"WorkingDirectory={state}\n"
        f"Environment=DATA_DIR={state}\n"
        # Its caches (Hugging Face, torch) go under HOME, and it copies its static files to
        # STATIC_DIR at every start (by default inside the read-only package directory).
        f"Environment=HOME={state}\n"
        f"Environment=STATIC_DIR={state}/static\n"
        f"EnvironmentFile={inp.install_dir}/{ENV}\n"
        f"EnvironmentFile={inp.install_dir}/{SECRETS_ENV}\n"
        f"ExecStart={inp.webui_bin} serve --host {host} --port {port}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        f"ReadWritePaths={state}\n"
        + _HARDENING
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )
