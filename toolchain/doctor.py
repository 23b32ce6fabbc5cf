"""`stack doctor`'s checks of a running server, through the public API only (`toolchain.client`).

Each check is a `Check(name, status, detail)` with status `ok`, `warn` (works, but worth knowing)
or `fail`; later checks that need an earlier one are `skip`ped when it failed.

    reachable  GET / answers 200
    version    GET /api/version (with the token, if any)
    auth       whether the server needs a key, and whether CORRAL_TOKEN is accepted
    models     GET /api/tags lists the models (how many)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from toolchain.client import Client
from toolchain.errors import APIError, ConnectError


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "warn", "skip")

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def run_checks(host: str | None = None, *, timeout: float = 10.0, token: str | None = None) -> list[Check]:
    token = token if token is not None else os.environ.get("CORRAL_TOKEN") or ""
    checks: list[Check] = []
    with Client(host, token="", timeout=timeout) as anonymous, Client(host, token=token, timeout=timeout) as client:
        try:
            text = anonymous.request("GET", "/").text.strip()
        except (ConnectError, APIError) as exc:
            checks.append(Check("reachable", "fail", str(exc)))
            return checks + [Check(n, "skip", "server not reachable") for n in ("version", "auth", "models")]
        checks.append(Check("reachable", "ok", f"{anonymous.url}: {text[:60]}"))

        try:
            anonymous.tags()
            needs_key = False
        except APIError as exc:
            if exc.status != 401:
                checks.append(Check("auth", "fail", f"GET /api/tags: {exc.status} {exc.message}"))
                return checks
            needs_key = True

        try:
            version = client.version()
            checks.append(Check("version", "ok", version))
        except (APIError, ConnectError) as exc:
            checks.append(Check("version", "fail", f"{exc}"))

        if not needs_key:
            checks.append(Check("auth", "warn", "the server needs no API key (open, as Ollama)"))
        elif not token:
            checks.append(Check("auth", "fail", "the server needs an API key: set CORRAL_TOKEN"))
        else:
            try:
                client.tags()
                checks.append(Check("auth", "ok", "CORRAL_TOKEN accepted"))
            except APIError as exc:
                checks.append(Check("auth", "fail", f"CORRAL_TOKEN refused: {exc.status} {exc.message}"))

        if checks[-1].status == "fail":
            checks.append(Check("models", "skip", "needs a working API key"))
            return checks
        try:
            models = client.tags()
            names = ", ".join(m.get("name", "?") for m in models[:5]) + (", ..." if len(models) > 5 else "")
            checks.append(Check("models", "ok", f"{len(models)} models" + (f": {names}" if models else "")))
        except (APIError, ConnectError) as exc:
            checks.append(Check("models", "fail", str(exc)))
    return checks
