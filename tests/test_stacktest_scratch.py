"""Scratch model names (reserved, never a real model's) and the sweep of stale ones."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from toolchain.names import parse_name
from toolchain.stacktest.scratch import STALE_AFTER, is_scratch, parse_time, scratch_name, stale


@pytest.mark.parametrize(
    "model, taken, expected",
    [
        ("support-bot", set(), "corral.invalid/scratch-ab12/support-bot:latest"),
        ("gemma3:270m", set(), "corral.invalid/scratch-ab12/gemma3:270m"),
        ("Team/Bot:V2", set(), "corral.invalid/scratch-ab12/bot:V2"),
        ("a/bot:x", {"corral.invalid/scratch-ab12/bot:x"}, "corral.invalid/scratch-ab12/bot-2:x"),
        ("b/bot:x", {"corral.invalid/scratch-ab12/bot:x", "corral.invalid/scratch-ab12/bot-2:x"},
         "corral.invalid/scratch-ab12/bot-3:x"),
    ],
)
def test_scratch_name(model, taken, expected):
    name = scratch_name(model, "ab12", taken)
    assert name == expected and parse_name(name).is_valid() and is_scratch(name)


@pytest.mark.parametrize(
    "name, expected",
    [("corral.invalid/scratch-1/bot:latest", True), ("CORRAL.INVALID/x/y:z", True), ("bot", False),
     ("registry.ollama.ai/library/bot:latest", False), ("corral/scratch/bot", False), ("corral.invalid.example.com/a/b", False)],
)
def test_is_scratch(name, expected):
    assert is_scratch(name) is expected


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-25T12:00:00Z", NOW),
        ("2026-11-25T12:00:00.5Z", NOW + 0.5),
        ("2026-11-25T13:00:00.123456789+01:00", NOW + 0.123456789),
        ("2026-11-25 12:00:00", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_time(value, expected):
    got = parse_time(value)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_stale_scratch_models():
    day = STALE_AFTER
    old = datetime.fromtimestamp(NOW - day - 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    fresh = datetime.fromtimestamp(NOW - day + 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = [
        {"name": "corral.invalid/scratch-1/bot:latest", "modified_at": old},
        {"name": "corral.invalid/scratch-2/bot:latest", "modified_at": fresh},
        {"name": "corral.invalid/scratch-3/bot:latest", "modified_at": "garbled"},
        {"name": "bot:latest", "modified_at": old},
    ]
    assert stale(tags, NOW) == ["corral.invalid/scratch-1/bot:latest"]
