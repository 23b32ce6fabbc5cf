"""Open WebUI preset plans (pure part): what differs between models.json and the UI's records.

The records below have the shape `GET /api/v1/models/all` of Open WebUI 0.12.4 answers
(every unset meta field null, grants with their own ids and times); the real UI is driven
in tests/test_webui_e2e.py.
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.support import render_input
from toolchain.render import render_public
from toolchain.render.model import RenderInput
from toolchain.stack.webui_sync import PresetChange, format_changes, preset_changes


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "webui-secret-key"
    path.write_text("k3y-0123456789abcdef-stable\n")
    return path


def _desired(key_file) -> list[dict]:
    return json.loads(render_public(render_input.make(key_file))["open-webui/models.json"])["models"]


def _as_stored(model: dict) -> dict:
    """A rendered model as Open WebUI stores and returns it after a sync."""
    stored = copy.deepcopy(model)
    stored.update(user_id="4acc8ba9", version_id="a077de70", created_at=1795622422, updated_at=1795622422)
    for field in ("profile_image_url", "background_image_url", "i18n", "capabilities", "knowledge", "voice"):
        stored["meta"].setdefault(field, None)
    stored["meta"].setdefault("description", None)
    stored["access_grants"] = [dict(g, id="34e1ec4c", created_at=1795622422) for g in stored["access_grants"]]
    return stored


def test_what_the_ui_stored_from_a_sync_is_up_to_date(key_file):
    desired = _desired(key_file)
    assert preset_changes(desired, [_as_stored(m) for m in desired]) == []


def _edit(model: dict, path: str, value) -> dict:
    out = copy.deepcopy(model)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(
    "path, value, fields",
    [
        ("name", "Help desk", ("name",)),
        ("base_model_id", "tiny:latest", ("base_model_id",)),
        ("params.temperature", 0.9, ("params",)),
        ("params.system", "Be rude.", ("params",)),
        ("meta.description", "Something else", ("meta",)),
        ("meta.hidden", True, ("meta",)),
        ("is_active", False, ("is_active",)),
        ("access_grants", [], ("access",)),
    ],
)
def test_a_preset_edited_in_the_ui_is_updated_back(key_file, path, value, fields):
    desired = _desired(key_file)
    current = [_as_stored(m) for m in desired]
    current[0] = _edit(current[0], path, value)
    assert preset_changes(desired, current) == [PresetChange("update", "helpdesk", fields)]


def test_missing_presets_are_created_and_hand_made_ones_deleted(key_file):
    desired = _desired(key_file)
    stray = _as_stored(dict(desired[0], id="made-by-hand", name="Mine"))
    current = [stray, _as_stored(desired[1])]
    assert preset_changes(desired, current) == [
        PresetChange("create", "helpdesk"),
        PresetChange("delete", "made-by-hand"),
    ]
    assert preset_changes([], current) == [PresetChange("delete", "made-by-hand"), PresetChange("delete", "tiny:latest")]


def test_the_plan_text_lists_each_change_and_counts(key_file):
    changes = [PresetChange("create", "a"), PresetChange("update", "b", ("name", "params")), PresetChange("delete", "c")]
    assert format_changes("https://chat.example.org", changes) == (
        "Open WebUI presets at https://chat.example.org:\n"
        "  + a\n"
        "  ~ b (name, params)\n"
        "  - c\n"
        "Presets: 1 to create, 1 to update, 1 to delete.\n"
    )
    assert format_changes("https://chat.example.org", []) == "Open WebUI presets at https://chat.example.org: up to date.\n"


def test_admin_key_env_enables_api_keys_for_the_model_routes_only(key_file):
    data = render_input.stack_data(key_file)
    plain = render_public(RenderInput.model_validate(data))["open-webui/open-webui.env"]
    assert "ENABLE_API_KEYS" not in plain
    data["webui"]["admin_key_env"] = "WEBUI_ADMIN_KEY"
    env = render_public(RenderInput.model_validate(data))["open-webui/open-webui.env"]
    assert "ENABLE_API_KEYS='true'\n" in env
    assert "ENABLE_API_KEYS_ENDPOINT_RESTRICTIONS='true'\n" in env
    assert "API_KEYS_ALLOWED_ENDPOINTS='/api/v1/models'\n" in env
    data["webui"]["admin_key_env"] = "not a variable"
    with pytest.raises(ValueError, match="admin_key_env 'not a variable' is not an environment variable name"):
        RenderInput.model_validate(data)
