"""Model names: every case of Ollama's recorded vectors, plus Corral's digest suffix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.errors import CorralError
from toolchain.names import (
    MISSING,
    InvalidNameError,
    Name,
    is_digest,
    parse_name,
    parse_name_bare,
    parse_valid_name,
)

# Recorded from Ollama (types/model/name.go, v0.33.0-rc2); a copy of shared/ollama-vectors.
VECTORS = Path(__file__).parent / "vectors" / "model_name_cases.json"
CASES = json.loads(VECTORS.read_text())
HEX = "a" * 64


def _parts(n: Name) -> dict:
    return {"scheme": n.scheme, "host": n.host, "namespace": n.namespace, "model": n.model, "tag": n.tag}


def test_vectors_file_is_complete():
    assert len(CASES) == 68


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_ollama_name_vector(case):
    bare = parse_name_bare(case["input"])
    assert _parts(bare) == case["bare"]
    assert bare.is_valid() is case["bare_valid"]
    assert bare.digest == ""

    parsed = parse_name(case["input"])
    assert _parts(parsed) == case["parsed"]
    assert parsed.is_valid() is case["valid"]
    assert str(parsed) == case["string"]
    if case["valid"]:
        assert parsed.display_shortest() == case["display_shortest"]
        assert parsed.filepath() == case["filepath"]
        assert parse_valid_name(case["input"]) == parsed
    else:
        with pytest.raises(InvalidNameError) as info:
            parsed.filepath()
        with pytest.raises(InvalidNameError) as info:
            parse_valid_name(case["input"])
        assert str(info.value) == "invalid model name"
        assert info.value.name == case["input"]

    upstream = case.get("upstream", {})
    if "bare" in upstream:
        for key, value in upstream["bare"].items():
            assert getattr(bare, key) == value
    if "filepath" in upstream:
        assert parsed.filepath() == upstream["filepath"]
    if "display_shortest" in upstream:
        assert parsed.display_shortest() == upstream["display_shortest"]


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"mistral@sha256:{HEX}", Name("https", "registry.ollama.ai", "library", "mistral", "latest", f"sha256:{HEX}")),
        (f"user/m:7b@sha256:{HEX}", Name("https", "registry.ollama.ai", "user", "m", "7b", f"sha256:{HEX}")),
        (f"h:5000/n/m:t@sha256:{HEX.upper()}", Name("https", "h:5000", "n", "m", "t", f"sha256:{HEX}")),
    ],
)
def test_digest_suffix_pins_a_manifest(text, expected):
    n = parse_name(text)
    assert n == expected
    assert n.is_valid()
    assert str(n).endswith(f"@sha256:{HEX}")
    assert parse_name(str(n)) == n
    # the digest is not part of the storage path nor the short display
    assert "@" not in n.filepath()
    assert "@" not in n.display_shortest()
    assert n.without_digest().digest == ""


@pytest.mark.parametrize(
    "text",
    ["mistral@sha256:abc", f"mistral@sha256:{HEX}0", f"mistral@sha512:{HEX}", f"mistral@{HEX}", f"@sha256:{HEX}",
     f"mistral@sha256:{'g' * 64}", f"mistral@@sha256:{HEX}"],
)
def test_bad_digests_are_invalid(text):
    assert not parse_name(text).is_valid()
    with pytest.raises(InvalidNameError):
        parse_valid_name(text)


def test_is_digest():
    assert is_digest(f"sha256:{HEX}")
    assert not is_digest(f"sha256-{HEX}")
    assert not is_digest("sha256:abc")


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("LLaMa3.2", "llama3.2:latest", True),
        ("llama3.2:LATEST", "registry.ollama.ai/library/llama3.2", True),
        ("Registry.Ollama.AI/Library/M:T", "m:t", True),
        ("user/m", "m", False),
        ("m:a", "m:b", False),
        (f"m@sha256:{HEX}", "M", True),
    ],
)
def test_case_insensitive_matching(a, b, same):
    assert parse_name(a).matches(parse_name(b)) is same
    assert (parse_name(a).casefold_key() == parse_name(b).casefold_key()) is same


def test_display_shortest_keeps_given_case():
    assert parse_name("Registry.Ollama.AI/LIBRARY/Foo:Bar").display_shortest() == "Foo:Bar"


def test_registry_parts():
    n = parse_name("http://localhost:5000/ns/m:t")
    assert n.base_url() == "http://localhost:5000"
    assert n.namespace_model() == "ns/m"
    assert parse_name("m").base_url() == "https://registry.ollama.ai"


def test_custom_message_and_hierarchy():
    with pytest.raises(InvalidNameError) as info:
        parse_valid_name("a b", message='name "a b" is invalid')
    assert str(info.value) == 'name "a b" is invalid'
    assert isinstance(info.value, CorralError) and isinstance(info.value, ValueError)


def test_missing_placeholder():
    assert parse_name_bare("m:").tag == MISSING
