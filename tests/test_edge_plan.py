"""`stack plan`'s Open WebUI presets and rendered files, in every plan format (pure part).

The presets are compared with a real Open WebUI in tests/test_webui_e2e.py and the
rendered files on disk in tests/test_render_cli.py; here a preset plan is built from its
changes and each format is checked: text, the JSON document's `webui_presets` and
`rendered_files`, the markdown section.
"""

from __future__ import annotations

import json

import pytest

from toolchain.stack import render_plan
from toolchain.stack.edge_plan import EdgePlan
from toolchain.stack.plan import Plan
from toolchain.stack.webui_sync import PresetChange, PresetPlan

URL = "https://chat.example.org"
CHANGES = [PresetChange("create", "a"), PresetChange("update", "b", ("name", "params")), PresetChange("delete", "c")]
RENDERED = (("update", "nginx/corral.conf"), ("create", "systemd/open-webui.service"))
NO_MODEL_CHANGES = [Plan("gpu-1", "http://10.0.0.11:11434", (), (), "sha256:00", False)]


def _presets(changes=CHANGES) -> PresetPlan:
    return PresetPlan(URL, "WEBUI_ADMIN_KEY", "sk-secret-key-never-shown", {"models": []}, list(changes))


@pytest.mark.parametrize(
    "edge, changed",
    [
        (EdgePlan(), False),
        (EdgePlan(_presets([])), False),
        (EdgePlan(_presets()), True),
        (EdgePlan(None, RENDERED), True),
    ],
)
def test_changed_counts_presets_and_rendered_files(edge, changed):
    assert edge.changed is changed
    doc = render_plan.to_document(NO_MODEL_CHANGES, "stack.yaml", edge)
    assert doc["changed"] is changed


def test_json_document_lists_preset_and_rendered_file_changes():
    doc = json.loads(render_plan.render_json(NO_MODEL_CHANGES, "stack.yaml", EdgePlan(_presets(), RENDERED)))
    assert doc["format_version"] == "1.1"
    assert doc["webui_presets"] == {
        "url": URL,
        "summary": {"create": 1, "update": 1, "delete": 1},
        "changes": [
            {"action": "create", "id": "a", "fields": []},
            {"action": "update", "id": "b", "fields": ["name", "params"]},
            {"action": "delete", "id": "c", "fields": []},
        ],
    }
    assert doc["rendered_files"] == [
        {"action": "update", "path": "nginx/corral.conf"},
        {"action": "create", "path": "systemd/open-webui.service"},
    ]
    assert "sk-secret-key-never-shown" not in json.dumps(doc)


def test_json_without_an_admin_key_says_presets_were_not_compared():
    doc = render_plan.to_document(NO_MODEL_CHANGES, "stack.yaml", EdgePlan())
    assert doc["webui_presets"] is None and doc["rendered_files"] == [] and doc["changed"] is False
    # A saved plan (`--out`, what `stack apply plan.json` performs) holds only the models.
    saved = render_plan.to_document(NO_MODEL_CHANGES, "stack.yaml")
    assert "webui_presets" not in saved and "rendered_files" not in saved
    assert render_plan.from_document(saved)[0].target == "gpu-1"


def test_markdown_has_a_preset_table_and_the_rendered_files():
    text = render_plan.render_markdown(NO_MODEL_CHANGES, edge=EdgePlan(_presets(), RENDERED))
    assert "**No model changes; Open WebUI presets or rendered files differ (below).**" in text
    assert f"#### Open WebUI presets (`{URL}`)\n\n1 to create, 1 to update, 1 to delete.\n" in text
    assert "| `~` | `b` | update | name, params |\n" in text
    assert "| `-` | `c` | delete |  |\n" in text
    assert "#### Rendered files that `stack render` would change\n\n- `~` `nginx/corral.conf`\n" in text
    # The section comes before the per-target part (never cut with long model diffs).
    assert text.index("Open WebUI presets") < text.index("#### Target `gpu-1`")
    assert "sk-secret" not in text


def test_markdown_and_text_for_presets_that_are_up_to_date():
    edge = EdgePlan(_presets([]))
    text = render_plan.render_markdown(NO_MODEL_CHANGES, edge=edge)
    assert "**No changes. Every server matches the stack.**" in text
    assert f"#### Open WebUI presets (`{URL}`)\n\nUp to date.\n" in text
    assert edge.text() == f"\nOpen WebUI presets at {URL}: up to date.\n"


def test_no_edge_leaves_markdown_as_it_was():
    assert render_plan.render_markdown(NO_MODEL_CHANGES, edge=EdgePlan()) == render_plan.render_markdown(NO_MODEL_CHANGES)


def test_text_lists_rendered_files_after_the_presets():
    assert EdgePlan(_presets(CHANGES[:1]), RENDERED).text() == (
        f"\nOpen WebUI presets at {URL}:\n"
        "  + a\n"
        "Presets: 1 to create, 0 to update, 0 to delete.\n"
        "\nRendered files that `stack render` would change:\n"
        "  ~ nginx/corral.conf\n"
        "  + systemd/open-webui.service\n"
    )
