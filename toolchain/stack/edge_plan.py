"""What `stack plan` shows beside the models: Open WebUI's presets and the rendered edge files.

`EdgePlan` holds the preset plan (`webui_sync.PresetPlan`, or None when the stack names no
admin key) and the rendered files `stack render` would change (`render.from_stack.
render_changes`), and renders itself for each plan format: text after the models' plan,
two members of the JSON document (`webui_presets`, `rendered_files`) and a markdown
section. Pure; reading the UI and the disk is done by whoever builds it. Empty for
`--target` (presets and rendered files follow the whole stack).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from toolchain.stack.webui_sync import SYMBOL as PRESET_SYMBOL
from toolchain.stack.webui_sync import PresetChange, PresetPlan

__all__ = ["RENDER_SYMBOL", "EdgePlan"]

RENDER_SYMBOL = {"create": "+", "update": "~", "delete": "-"}


def _counts(changes: list[PresetChange]) -> dict[str, int]:
    return {a: sum(1 for c in changes if c.action == a) for a in PRESET_SYMBOL}


@dataclass(frozen=True)
class EdgePlan:
    presets: Optional[PresetPlan] = None
    rendered: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (create|update|delete, path)

    @property
    def changed(self) -> bool:
        return bool(self.rendered) or (self.presets is not None and bool(self.presets.changes))

    def text(self) -> str:
        out = ""
        if self.presets is not None:
            out += "\n" + self.presets.text()
        if self.rendered:
            out += "\nRendered files that `stack render` would change:\n"
            out += "".join(f"  {RENDER_SYMBOL[action]} {rel}\n" for action, rel in self.rendered)
        return out

    def document(self) -> dict[str, Any]:
        """The plan document's members: null presets = not compared (no admin key)."""
        presets = None
        if self.presets is not None:
            presets = {
                "url": self.presets.url,
                "summary": _counts(self.presets.changes),
                "changes": [{"action": c.action, "id": c.id, "fields": list(c.fields)} for c in self.presets.changes],
            }
        return {
            "webui_presets": presets,
            "rendered_files": [{"action": action, "path": rel} for action, rel in self.rendered],
        }

    def markdown(self) -> str:
        out: list[str] = []
        if self.presets is not None:
            out += [f"#### Open WebUI presets (`{self.presets.url}`)", ""]
            if not self.presets.changes:
                out += ["Up to date.", ""]
            else:
                n = _counts(self.presets.changes)
                out += [f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete.", ""]
                out += ["| | preset | action | fields |", "|---|---|---|---|"]
                for c in self.presets.changes:
                    out.append(f"| `{PRESET_SYMBOL[c.action]}` | `{c.id}` | {c.action} | {', '.join(c.fields)} |")
                out.append("")
        if self.rendered:
            out += ["#### Rendered files that `stack render` would change", ""]
            out += [f"- `{RENDER_SYMBOL[action]}` `{rel}`" for action, rel in self.rendered]
            out.append("")
        return "\n".join(out) + ("\n" if out else "")
