"""Option names/types (Ollama's api.Options), PARAMETER typing, request option checks."""

from __future__ import annotations

import pytest

from toolchain.errors import CorralError
from toolchain.options import (
    DEPRECATED_PARAMETERS,
    OPTIONS,
    OptionError,
    defaults,
    parse_parameter,
    parse_parameters,
    validate_options,
)


def test_table_is_ollamas_options_at_head():
    assert set(OPTIONS) == {
        "num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict",
        "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
        "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "stop",
    }
    assert {n for n, o in OPTIONS.items() if o.load_time} == {
        "num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread", "draft_num_predict"}
    assert not DEPRECATED_PARAMETERS & set(OPTIONS)


def test_defaults_are_ollamas():
    assert defaults() == {
        "num_batch": 512, "num_gpu": -1, "num_thread": 0, "draft_num_predict": 4, "num_keep": 4,
        "seed": -1, "num_predict": -1, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0,
        "repeat_last_n": 64, "temperature": 0.8, "repeat_penalty": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }


# --------------------------------------------------------------------------- PARAMETER strings

@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("num_ctx", "4096", 4096),
        ("seed", "-1", -1),
        ("seed", "+7", 7),
        ("num_predict", "9223372036854775807", 2**63 - 1),
        ("temperature", "0.5", 0.5),
        ("temperature", "1", 1.0),
        ("top_p", ".5", 0.5),
        ("top_p", "5.", 5.0),
        ("min_p", "1e-2", 0.01),
        ("min_p", "0x1p-2", 0.25),
        ("repeat_penalty", "-0", 0.0),
        ("use_mmap", "true", True),
        ("use_mmap", "1", True),
        ("use_mmap", "T", True),
        ("use_mmap", "FALSE", False),
        ("use_mmap", "f", False),
        ("stop", "### User:", ["### User:"]),
        ("stop", "", [""]),
    ],
)
def test_parse_parameter(name, value, expected):
    got = parse_parameter(name, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("foo", "bar", "unknown parameter 'foo'"),
        ("Temperature", "0.5", "unknown parameter 'Temperature'"),
        ("numa", "true", "unknown parameter 'numa'"),
        ("mirostat", "1", "unknown parameter 'mirostat'"),  # deprecated: dropped by parse_parameters only
        ("num_ctx", "1.5", "invalid int value [1.5]"),
        ("num_ctx", "", "invalid int value []"),
        ("num_ctx", " 1", "invalid int value [ 1]"),
        ("num_ctx", "1_000", "invalid int value [1_000]"),
        ("num_ctx", "9223372036854775808", "invalid int value [9223372036854775808]"),
        ("num_ctx", "0x10", "invalid int value [0x10]"),
        ("temperature", "abc", "invalid float value [abc]"),
        ("temperature", "1e39", "invalid float value [1e39]"),
        ("temperature", "inf", "invalid float value [inf]"),
        ("temperature", "NaN", "invalid float value [NaN]"),
        ("temperature", "1_0", "invalid float value [1_0]"),
        ("temperature", "0.5 ", "invalid float value [0.5 ]"),
        ("temperature", ".", "invalid float value [.]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
        ("use_mmap", "tRUE", "invalid bool value [tRUE]"),
        ("use_mmap", "maybe later", "invalid bool value [maybe later]"),
    ],
)
def test_parse_parameter_errors(name, value, message):
    with pytest.raises(OptionError) as info:
        parse_parameter(name, value)
    assert str(info.value) == message
    assert info.value.name == name
    assert isinstance(info.value, CorralError) and isinstance(info.value, ValueError)


def test_parse_parameters_accumulates_stop_and_drops_deprecated():
    got = parse_parameters([
        ("stop", "a"), ("temperature", "0.1"), ("mirostat", "2"), ("stop", "b"), ("temperature", "0.2"),
    ])
    assert got == {"stop": ["a", "b"], "temperature": 0.2}


# --------------------------------------------------------------------------- request options

@pytest.mark.parametrize(
    "options, values, ignored",
    [
        (None, {}, []),
        ({}, {}, []),
        ({"num_ctx": 2048, "temperature": 0, "top_p": 0.5}, {"num_ctx": 2048, "temperature": 0.0, "top_p": 0.5}, []),
        ({"num_ctx": 2048.9, "seed": -3.7}, {"num_ctx": 2048, "seed": -3}, []),  # Go int64(float64) truncation
        ({"use_mmap": False, "stop": ["a", "b"]}, {"use_mmap": False, "stop": ["a", "b"]}, []),
        ({"stop": []}, {"stop": []}, []),
        ({"temperature": None, "stop": None}, {}, []),
        ({"mirostat": 1, "tfs_z": 1.0, "Temperature": 2}, {}, ["mirostat", "tfs_z", "Temperature"]),
    ],
)
def test_validate_options(options, values, ignored):
    got = validate_options(options)
    assert got.values == values and got.ignored == ignored
    for key, value in got.values.items():
        assert type(value) is type(values[key])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_ctx": "2048"}, 'option "num_ctx" must be of type integer'),
        ({"num_ctx": True}, 'option "num_ctx" must be of type integer'),
        ({"main_gpu": "0"}, 'option "main_gpu" must be of type integer'),
        ({"seed": float("inf")}, 'option "seed" must be of type integer'),
        ({"temperature": "0.5"}, 'option "temperature" must be of type float32'),
        ({"temperature": False}, 'option "temperature" must be of type float32'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"use_mmap": "true"}, 'option "use_mmap" must be of type boolean'),
        ({"stop": "</s>"}, 'option "stop" must be of type array'),
        ({"stop": ["a", 1]}, 'option "stop" must be of an array of strings'),
    ],
)
def test_validate_options_errors(options, message):
    with pytest.raises(OptionError) as info:
        validate_options(options)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
