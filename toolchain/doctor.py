"""`stack doctor`'s checks of running servers, through the public API only (`toolchain.client`).

Each check is a `Check(target, name, status, detail)` with status `ok`, `warn` (works, but worth
knowing) or `fail`; checks that need an earlier one are `skip`ped when it failed.

    reachable      GET / answers 200
    version        GET /api/version (with the token, if any)
    auth           whether the server needs a key, and whether the token is accepted
    models         GET /api/tags lists the models (how many)
    disk           free space of the store's filesystem (`GET /api/corral/store`): fail under
                   `min_free` bytes, warn under 10% free; warn when the server does not say
                   (a real Ollama has no such route)

With a stack file (`stack_checks`), for every target it declares (token from the variable the
target names), and then for every model of the stack:

    model NAME     present and as declared (`stack plan` has nothing to do for it)
    run NAME       a one-token generation (an embedding for embedding-only models) answers
                   within the timeout
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from toolchain.client import Client
from toolchain.errors import APIError, ConnectError


#: Default floor of free bytes for the store's filesystem (`stack doctor --min-free`, in GiB there).
MIN_FREE_BYTES = 1 << 30
#: Below this fraction of the filesystem free, the disk check warns.
LOW_FREE_FRACTION = 0.10
SERVER_CHECKS = ("reachable", "version", "auth", "models", "disk")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    target: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "warn", "skip")

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name, "status": self.status, "detail": self.detail}
        if self.target:
            out["target"] = self.target
        return out


def gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def disk_check(free: int, total: int, min_free: int = MIN_FREE_BYTES) -> Check:
    """The verdict on the store's filesystem from its free and total bytes."""
    detail = f"{gib(free)} free of {gib(total)} for the model store"
    if free < min_free:
        return Check("disk", "fail", f"{detail}: less than {gib(min_free)}, a pull or create may run out of room")
    if total and free < total * LOW_FREE_FRACTION:
        return Check("disk", "warn", f"{detail}: less than {LOW_FREE_FRACTION:.0%} free")
    return Check("disk", "ok", detail)


def _disk(client: Client, min_free: int) -> Check:
    try:
        space = client.json("GET", "/api/corral/store")
    except APIError as exc:
        if exc.status == 404:
            return Check("disk", "warn", "the server does not report its free space (not stack serve)")
        return Check("disk", "fail", f"GET /api/corral/store: {exc.status} {exc.message}")
    except ConnectError as exc:
        return Check("disk", "fail", str(exc))
    return disk_check(int(space["free_bytes"]), int(space["total_bytes"]), min_free)


def run_checks(host: str | None = None, *, timeout: float = 10.0, token: str | None = None,
               token_source: str = "CORRAL_TOKEN", min_free: int = MIN_FREE_BYTES) -> list[Check]:
    token = token if token is not None else os.environ.get("CORRAL_TOKEN") or ""
    checks: list[Check] = []
    with Client(host, token="", timeout=timeout) as anonymous, Client(host, token=token, timeout=timeout) as client:
        try:
            text = anonymous.request("GET", "/").text.strip()
        except (ConnectError, APIError) as exc:
            checks.append(Check("reachable", "fail", str(exc)))
            return checks + [Check(n, "skip", "server not reachable") for n in SERVER_CHECKS[1:]]
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
            checks.append(Check("auth", "fail", f"the server needs an API key: set {token_source}"))
        else:
            try:
                client.tags()
                checks.append(Check("auth", "ok", f"{token_source} accepted"))
            except APIError as exc:
                checks.append(Check("auth", "fail", f"{token_source} refused: {exc.status} {exc.message}"))

        if checks[-1].status == "fail":
            return checks + [Check(n, "skip", "needs a working API key") for n in ("models", "disk")]
        try:
            models = client.tags()
            names = ", ".join(m.get("name", "?") for m in models[:5]) + (", ..." if len(models) > 5 else "")
            checks.append(Check("models", "ok", f"{len(models)} models" + (f": {names}" if models else "")))
        except (APIError, ConnectError) as exc:
            checks.append(Check("models", "fail", str(exc)))
        checks.append(_disk(client, min_free))
    return checks


def stack_checks(loaded: Any, only: Sequence[str] = (), *, timeout: float = 60.0,
                 min_free: int = MIN_FREE_BYTES) -> list[Check]:
    """The server checks, then the declared models' presence and a short run, for every target."""
    from dataclasses import replace

    from toolchain.stack.desired import build
    from toolchain.stack.targets import plan_target, targets

    desired = build(loaded)
    checks: list[Check] = []
    for target in targets(loaded, only):
        server = [replace(c, target=target.name) for c in run_checks(
            target.url, timeout=timeout, token=target.token or "", token_source=f"the token of target {target.name}",
            min_free=min_free)]
        checks += server
        if any(c.status == "fail" and c.name != "disk" for c in server):  # a full disk still serves
            checks += [Check(f"model {d.state.name}", "skip", "server check failed", target.name) for d in desired.values()]
            continue
        with target.client(timeout=timeout) as client:
            try:
                plan = plan_target(desired, target, client, prune=False)
            except (APIError, ConnectError) as exc:
                checks.append(Check("models", "fail", f"reading the models: {exc}", target.name))
                continue
            for change in plan.changes:
                if change.action == "no-op":
                    checks.append(Check(f"model {change.model}", "ok", "present, as declared", target.name))
                else:
                    checks.append(Check(f"model {change.model}", "fail", f"{change.action}: {change.reason} "
                                        "(run `stack apply`)", target.name))
                    continue
                checks.append(_run(client, change.model, target.name))
    return checks


def _run(client: Client, model: str, target: str) -> Check:
    """A one-token generation (or an embedding, for a model that only embeds)."""
    try:
        caps = client.show(model).get("capabilities") or ["completion"]
        if "completion" not in caps and "embedding" in caps:
            client.json("POST", "/api/embed", {"model": model, "input": "ping"})
            return Check(f"run {model}", "ok", "embedding answered", target)
        body = {"model": model, "prompt": "ping", "stream": False, "options": {"num_predict": 1}}
        out = client.json("POST", "/api/generate", body)
        ms = (out or {}).get("total_duration", 0) / 1e6
        return Check(f"run {model}", "ok", f"generated in {ms:.0f} ms", target)
    except (APIError, ConnectError) as exc:
        return Check(f"run {model}", "fail", str(exc), target)
