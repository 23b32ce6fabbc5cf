"""Open WebUI's presets, reconciled like the models: compare `models.json` with the UI, then sync it.

When the stack's `webui` section names `admin_key_env` (the variable holding an API key of
an Open WebUI admin), `stack plan` lists the presets that `stack apply` would create, update
or delete in the UI at `webui.public_url`, and `stack apply` sends the rendered `models.json`
to `POST /api/v1/models/sync` (one transaction there: every model record not in the body
is deleted, hand-made ones included; the plan lists each).

Pure part: `comparable`, `preset_changes`, `format_changes`. I/O part: `prepare` reads the
UI's records (`GET /api/v1/models/all`, admin only) and `PresetPlan.apply` syncs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from toolchain.errors import CorralError

__all__ = ["PresetChange", "PresetPlan", "comparable", "format_changes", "prepare", "preset_changes"]

ALL_PATH = "/api/v1/models/all"
SYNC_PATH = "/api/v1/models/sync"
SYMBOL = {"create": "+", "update": "~", "delete": "-"}


@dataclass(frozen=True)
class PresetChange:
    action: str  # create | update | delete
    id: str
    fields: tuple[str, ...] = ()  # for an update: which parts differ


def _no_nulls(value: Any) -> Any:
    """Drop None members (Open WebUI fills every unset meta field with null)."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def comparable(model: Mapping[str, Any]) -> dict[str, Any]:
    """What of a model record the stack decides (not ids of grants, owners or timestamps)."""
    grants = sorted(
        (g.get("principal_type"), g.get("principal_id"), g.get("permission")) for g in model.get("access_grants") or []
    )
    return {
        "base_model_id": model.get("base_model_id"),
        "name": model.get("name"),
        "params": _no_nulls(model.get("params") or {}),
        "meta": _no_nulls(model.get("meta") or {}),
        "is_active": model.get("is_active", True),
        "access": grants,
    }


def preset_changes(desired: list[Mapping[str, Any]], current: list[Mapping[str, Any]]) -> list[PresetChange]:
    """Creates and updates in the stack's order, then deletes in the UI's order."""
    have = {m["id"]: comparable(m) for m in current}
    changes: list[PresetChange] = []
    for model in desired:
        want = comparable(model)
        old = have.get(model["id"])
        if old is None:
            changes.append(PresetChange("create", model["id"]))
        elif old != want:
            changes.append(PresetChange("update", model["id"], tuple(k for k in want if want[k] != old[k])))
    wanted = {m["id"] for m in desired}
    changes.extend(PresetChange("delete", m["id"]) for m in current if m["id"] not in wanted)
    return changes


def format_changes(url: str, changes: list[PresetChange]) -> str:
    if not changes:
        return f"Open WebUI presets at {url}: up to date.\n"
    lines = [f"Open WebUI presets at {url}:\n"]
    for c in changes:
        detail = f" ({', '.join(c.fields)})" if c.fields else ""
        lines.append(f"  {SYMBOL[c.action]} {c.id}{detail}\n")
    n = {a: sum(1 for c in changes if c.action == a) for a in SYMBOL}
    lines.append(f"Presets: {n['create']} to create, {n['update']} to update, {n['delete']} to delete.\n")
    return "".join(lines)


def _detail(response: Any) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("detail"):
            return str(body["detail"])
    except ValueError:
        pass
    return response.text.strip()[:200]


@dataclass
class PresetPlan:
    url: str
    key_env: str
    key: str
    body: dict
    changes: list[PresetChange]

    def text(self) -> str:
        return format_changes(self.url, self.changes)

    def apply(self, echo: Callable[[str], None] = print) -> None:
        """POST the body to the sync route; a no-op when nothing differs."""
        if not self.changes:
            return
        synced = _call(self, "POST", SYNC_PATH, json=self.body)
        want = {m["id"] for m in self.body["models"]}
        got = {m.get("id") for m in synced} if isinstance(synced, list) else set()
        if got != want:
            raise CorralError(f"Open WebUI at {self.url} synced {sorted(got)}, not the presets {sorted(want)}")
        echo(f"Open WebUI presets synced: {len(self.changes)} change(s).")


def _call(plan: PresetPlan, method: str, path: str, **kw: Any) -> Any:
    import httpx

    try:
        r = httpx.request(method, plan.url + path, headers={"Authorization": f"Bearer {plan.key}"}, timeout=60, **kw)
    except httpx.HTTPError as exc:
        raise CorralError(f"Open WebUI at {plan.url} is not reachable: {exc}") from None
    if r.status_code in (401, 403):
        raise CorralError(
            f"Open WebUI at {plan.url} refused the admin key in {plan.key_env} ({r.status_code}: {_detail(r)}); "
            "it must be an API key of an admin account"
        )
    if r.status_code != 200:
        raise CorralError(f"Open WebUI at {plan.url} answered {method} {path} with {r.status_code}: {_detail(r)}")
    try:
        return r.json()
    except ValueError:
        raise CorralError(f"Open WebUI at {plan.url} answered {method} {path} with something not JSON") from None


def prepare(loaded: Any, environ: Optional[Mapping[str, str]] = None, warn: Callable[[str], None] = print) -> Optional[PresetPlan]:
    """The preset plan of a loaded stack, or None when it names no Open WebUI admin key.

    A key variable that is not set is a warning (the first apply runs before the UI exists),
    not an error; an unreachable UI or a refused key is an error.
    """
    from toolchain.render.from_stack import render_input
    from toolchain.render.webui import models_body

    ui = loaded.stack.webui
    if ui is None or not ui.enabled or not ui.admin_key_env:
        return None
    env = os.environ if environ is None else environ
    key = (env.get(ui.admin_key_env) or "").strip()
    if not key:
        warn(f"Open WebUI presets not compared: environment variable {ui.admin_key_env} is not set.")
        return None
    body = models_body(render_input(loaded))
    plan = PresetPlan(ui.public_url, ui.admin_key_env, key, body, [])
    current = _call(plan, "GET", ALL_PATH)
    if not isinstance(current, list):
        raise CorralError(f"Open WebUI at {plan.url} answered GET {ALL_PATH} with something not a list")
    plan.changes = preset_changes(body["models"], current)
    return plan
