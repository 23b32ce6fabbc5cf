"""`stack serve -f stack.yaml [--apply]`: the bundled server started in a stack's declared state.

`runtime_environment` turns the stack's `runtime:` section into the OLLAMA_* variables the
server reads, without overriding any variable already set (the environment wins).
`reconcile_when_ready` waits until the server at `url` answers, then plans and applies the
stack's models against it, as `stack apply --auto-approve` would; `stack serve` runs it on a
background thread so one command brings a team server up with its models.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional

import httpx

from toolchain.errors import CorralError
from toolchain.stack.apply import apply_plan
from toolchain.stack.desired import build
from toolchain.stack.load import LoadedStack
from toolchain.stack.render_plan import render_text
from toolchain.stack.targets import Target, plan_target

Echo = Callable[[str], None]


def runtime_environment(loaded: LoadedStack, environ: Mapping[str, str]) -> dict[str, str]:
    """The stack's runtime settings as OLLAMA_* variables, minus those `environ` already sets."""
    return {k: v for k, v in loaded.stack.runtime.environment().items() if not environ.get(k)}


def wait_until_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise CorralError(f"the server at {url} did not answer within {timeout:g}s; nothing was applied")
        time.sleep(0.1)


def reconcile_when_ready(loaded: LoadedStack, url: str, *, echo: Echo, timeout: float = 120.0) -> bool:
    """Apply the stack's models to the server at `url` once it answers; True when it matches.

    Errors are reported through `echo` (the server keeps running with what it has).
    """
    try:
        desired = build(loaded)
        wait_until_ready(url, timeout)
        target = Target("serve", url, None)
        with target.client() as client:
            plan = plan_target(desired, target, client, loaded.stack.prune)
            echo(render_text([plan]).rstrip("\n"))
            if plan.pending or any(c.desired and c.desired.preload for c in plan.changes):
                result = apply_plan(plan, client, echo=echo)
                for warning in result.warnings:
                    echo(f"Warning: {warning}")
                echo(f"stack applied: {len(result.done)} change(s) made")
        return True
    except CorralError as exc:
        echo(f"Error: stack apply failed: {exc}")
        return False


def start_reconcile(loaded: LoadedStack, url: str, *, echo: Echo, timeout: float = 120.0) -> threading.Thread:
    """Run `reconcile_when_ready` on a daemon thread (the server runs on the main thread)."""
    thread = threading.Thread(
        target=reconcile_when_ready, args=(loaded, url), kwargs={"echo": echo, "timeout": timeout},
        name="corral-stack-apply", daemon=True,
    )
    thread.start()
    return thread


def prepare_serve(stack_file: Optional[str], apply: bool, environ: dict[str, str], echo: Echo) -> None:
    """What `stack serve -f FILE [--apply]` does before the server starts.

    Loads (and so validates) the stack, fills `environ` with its runtime settings, and with
    `apply` starts the reconcile thread against the address the server will listen on.
    """
    if stack_file is None:
        if apply:
            raise CorralError("--apply needs a stack file: stack serve -f stack.yaml --apply")
        return
    from toolchain.client import base_url
    from toolchain.stack.load import load

    loaded = load(stack_file)
    environ.update(runtime_environment(loaded, environ))
    if apply:
        start_reconcile(loaded, base_url(environ.get("OLLAMA_HOST")), echo=echo)
