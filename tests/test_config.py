"""OLLAMA_* settings: parsing like Ollama's envconfig, and where `stack serve` binds."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Config, bind_address, describe, parse_bool


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", ("127.0.0.1", 11434)),
        ("1.2.3.4", ("1.2.3.4", 11434)),
        (":1234", ("0.0.0.0", 1234)),
        ("1.2.3.4:1234", ("1.2.3.4", 1234)),
        ("example.com:1234", ("example.com", 1234)),
        ("[::1]", ("::1", 11434)),
        ("::1", ("::1", 11434)),
        ("[::1]:1337", ("::1", 1337)),
        ("http://1.2.3.4", ("1.2.3.4", 80)),
        ("https://1.2.3.4", ("1.2.3.4", 443)),
        ("http://1.2.3.4:5678/path", ("1.2.3.4", 5678)),
        ("1.2.3.4:99999", ("1.2.3.4", 11434)),
        ("  '0.0.0.0:8080' ", ("0.0.0.0", 8080)),
    ],
)
def test_bind_address(raw, expected):
    assert bind_address(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [("", False), ("1", True), ("true", True), ("TRUE", True), ("t", True), ("0", False), ("false", False),
     ("F", False), ("yes", True), ("garbage", True)],
)
def test_bool_like_go(raw, expected):
    assert parse_bool(raw) is expected


def test_from_env(tmp_path):
    config = Config.from_env({"OLLAMA_MODELS": f' "{tmp_path}" ', "OLLAMA_NOPRUNE": "1"})
    assert config.models == tmp_path and config.noprune is True and config.host == "127.0.0.1:11434"
    default = Config.from_env({})
    assert default.models == Path.home() / ".ollama" / "models" and default.noprune is False
    assert Config.from_env({}, noprune=True).noprune is True


def test_every_setting_is_documented():
    names = [name for name, help_text in describe() if help_text]
    assert {"OLLAMA_HOST", "OLLAMA_MODELS", "OLLAMA_NOPRUNE"} <= set(names)
    assert len(names) == len(set(names))
