"""Go durations and keep_alive, as Ollama parses them (api.Duration, time.ParseDuration, envconfig)."""

from __future__ import annotations

import math

import pytest

from toolchain.duration import (
    DEFAULT_KEEP_ALIVE,
    FOREVER,
    DurationError,
    format_go_duration,
    keep_alive_from_env,
    parse_go_duration,
    parse_keep_alive,
)

@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0), ("-0", 0.0), ("+0", 0.0), ("0s", 0.0), ("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3),
        ("1.5h", 5400.0), (".5s", 0.5), ("1.s", 1.0), ("-1m", -60.0), ("+2s", 2.0), ("10us", 1e-5),
        ("10µs", 1e-5), ("10μs", 1e-5), ("7ns", 7e-9), ("1h2m3s4ms", 3723.004), ("2562047h", 2562047 * 3600.0),
    ],
)
def test_parse_go_duration(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", 'time: invalid duration ""'),
        ("300", 'time: missing unit in duration "300"'),
        ("5", 'time: missing unit in duration "5"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("5M", 'time: unknown unit "M" in duration "5M"'),
        ("-", 'time: invalid duration "-"'),
        (".s", 'time: invalid duration ".s"'),
        ("s", 'time: invalid duration "s"'),
        (" 5m", 'time: invalid duration " 5m"'),
        ("1h 2m", 'time: unknown unit "h " in duration "1h 2m"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
        ("5é", 'time: unknown unit "\\xc3\\xa9" in duration "5\\xc3\\xa9"'),
    ],
)
def test_parse_go_duration_errors(text, message):
    with pytest.raises(DurationError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None), (0, 0.0), (42.5, 42.5), (300, 300.0), (-1, FOREVER), (-0.5, FOREVER), (1e300, FOREVER),
        ("5m", 300.0), ("0", 0.0), ("0s", 0.0), ("-1m", FOREVER), ("-1s", FOREVER), ("1h", 3600.0),
    ],
)
def test_parse_keep_alive(value, expected):
    assert parse_keep_alive(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("300", 'time: missing unit in duration "300"'),
        (True, "Unsupported type: 'bool'"),
        ([], "Unsupported type: '[]interface {}'"),
        ({}, "Unsupported type: 'map[string]interface {}'"),
    ],
)
def test_parse_keep_alive_errors(value, message):
    with pytest.raises(DurationError) as info:
        parse_keep_alive(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, expected",
    [(None, DEFAULT_KEEP_ALIVE), ("", DEFAULT_KEEP_ALIVE), ("10m", 600.0), ("300", 300.0), (' "1h" ', 3600.0),
     ("-1", FOREVER), ("0", 0.0), ("soon", DEFAULT_KEEP_ALIVE), ("+-5", DEFAULT_KEEP_ALIVE)],
)
def test_keep_alive_from_env(text, expected):
    assert keep_alive_from_env(text) == expected


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (300, "5m0s"), (5400, "1h30m0s"), (1.5, "1.5s"), (0.0015, "1.5ms"), (2e-6, "2µs"),
     (7e-9, "7ns"), (-60, "-1m0s"), (3723.004, "1h2m3.004s"), (86400, "24h0m0s")],
)
def test_format_go_duration(seconds, text):
    assert format_go_duration(seconds) == text
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_forever_is_infinite():
    assert math.isinf(FOREVER)
