"""`stack run`, `stack ps`, `stack stop`: output formats (tables of cases) and the REPL's commands."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from toolchain.cli.run_cmd import go_duration, human_bytes, human_until, parameter_value, ps_table, summary


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (2_019_393_189, "2.0 GB"),
     (19_000_000_000, "19 GB"), (2_000_000_000, "2 GB"), (274_302_450, "274 MB")],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    "ns, text",
    [(0, "0s"), (5_026_000, "5.026ms"), (5_043_500_667, "5.043500667s"), (325_953_000, "325.953ms"),
     (90_000_000_000, "1m30s"), (1500, "1.5\u00b5s"), (999, "999ns")],
)
def test_go_duration(ns, text):
    assert go_duration(ns) == text


NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "delta, text",
    [(timedelta(minutes=4, seconds=30), "4 minutes from now"), (timedelta(seconds=-1), "Stopping..."),
     (timedelta(days=365 * 200), "Forever"), (timedelta(seconds=30), "30 seconds from now"),
     (timedelta(minutes=1, seconds=5), "About a minute from now"), (timedelta(hours=3), "3 hours from now")],
)
def test_until(delta, text):
    assert human_until(NOW + delta, NOW) == text


def test_ps_table_columns_and_padding():
    models = [
        {"name": "gemma3:270m", "digest": "a80c4f17acd5" + "0" * 52, "size": 300_000_000, "size_vram": 0,
         "context_length": 4096, "expires_at": "2026-01-01T00:04:30.123456789Z"},
        {"name": "tiny:latest", "digest": "b" * 64, "size": 2_000_000, "size_vram": 0, "context_length": 2048,
         "expires_at": "2318-04-11T23:47:16.854775807Z"},
    ]
    assert ps_table(models, NOW).splitlines() == [
        "NAME           ID              SIZE      PROCESSOR    CONTEXT    UNTIL",
        "gemma3:270m    a80c4f17acd5    300 MB    100% CPU     4096       4 minutes from now",
        "tiny:latest    bbbbbbbbbbbb    2 MB      100% CPU     2048       Forever",
    ]


def test_ps_table_without_models_is_the_header():
    assert ps_table([]) == "NAME    ID    SIZE    PROCESSOR    CONTEXT    UNTIL"


@pytest.mark.parametrize(
    "name, values, typed",
    [("temperature", ["0.2"], 0.2), ("num_ctx", ["8192"], 8192), ("stop", ["<a>", "<b>"], ["<a>", "<b>"]),
     ("use_mmap", ["false"], False), ("seed", ["-1"], -1)],
)
def test_set_parameter_types(name, values, typed):
    assert parameter_value(name, values) == typed


@pytest.mark.parametrize(
    "name, values, message",
    [("num_ctx", ["big"], "invalid int value [big]"), ("top_p", ["x"], "invalid float value [x]"),
     ("nonsense", ["1"], "unknown parameter 'nonsense'")],
)
def test_set_parameter_errors(name, values, message):
    with pytest.raises(ValueError) as info:
        parameter_value(name, values)
    assert str(info.value) == message


def test_verbose_summary_lines():
    final = {"total_duration": 5_043_500_667, "load_duration": 5_026_000, "prompt_eval_count": 26,
             "prompt_eval_duration": 325_953_000, "eval_count": 290, "eval_duration": 4_709_213_000}
    assert summary(final).splitlines() == [
        "total duration:       5.043500667s",
        "load duration:        5.026ms",
        "prompt eval count:    26 token(s)",
        "prompt eval duration: 325.953ms",
        "prompt eval rate:     79.77 tokens/s",
        "eval count:           290 token(s)",
        "eval duration:        4.709213s",
        "eval rate:            61.58 tokens/s",
    ]
