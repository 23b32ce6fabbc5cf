"""`server.registry.protocol.parse_manifest`: what a manifest from the wire may and may not be."""

from __future__ import annotations

import json

import pytest

from server.registry.protocol import MAX_LAYERS, ManifestError, parse_manifest

D = "sha256:" + "ab" * 32
CFG = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D, "size": 10}
LAYER = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "cd" * 32, "size": 5}


def doc(**over) -> bytes:
    obj = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": CFG, "layers": [LAYER]}
    obj.update(over)
    return json.dumps(obj).encode()


GOOD = [
    ("ollama", doc()),
    ("no layers", doc(layers=[])),
    ("no top-level mediaType", json.dumps({"schemaVersion": 2, "config": CFG, "layers": []}).encode()),
    ("extra keys kept", doc(layers=[{**LAYER, "from": "x/y:z", "annotations": {}}])),
    ("zero-byte layer", doc(layers=[{**LAYER, "size": 0}])),
]

BAD = [
    ("not json", b"{", "invalid manifest: not JSON (JSONDecodeError)"),
    ("not utf-8", b"\xff\xfe", "invalid manifest: not JSON (UnicodeDecodeError)"),
    ("NaN", doc().replace(b'"size": 5', b'"size": NaN'), "invalid manifest: not JSON (ValueError)"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "invalid manifest: not JSON (RecursionError)"),
    ("array", b"[]", "invalid manifest: not a JSON object"),
    ("schema 1", doc(schemaVersion=1), "invalid manifest: schemaVersion must be 2"),
    ("schema true", doc(schemaVersion=True), "invalid manifest: schemaVersion must be 2"),
    ("oci index", doc(mediaType="application/vnd.oci.image.index.v1+json"),
     "invalid manifest: unsupported mediaType 'application/vnd.oci.image.index.v1+json'"),
    ("layers object", doc(layers={}), "invalid manifest: layers must be a list"),
    ("no config", doc(config=None), "invalid manifest: config is not an object"),
    ("traversal", doc(layers=[{**LAYER, "digest": "../../etc/passwd"}]),
     "invalid manifest: layer 0 has an invalid digest '../../etc/passwd'"),
    ("dash form", doc(layers=[{**LAYER, "digest": "sha256-" + "cd" * 32}]), None),
    ("upper hex", doc(layers=[{**LAYER, "digest": "sha256:" + "CD" * 32}]), None),
    ("short", doc(layers=[{**LAYER, "digest": "sha256:abc"}]), None),
    ("empty digest", doc(layers=[{**LAYER, "digest": ""}]), "invalid manifest: layer 0 has an invalid digest ''"),
    ("sha512", doc(layers=[{**LAYER, "digest": "sha512:" + "cd" * 64}]), None),
    ("digest not a string", doc(layers=[{**LAYER, "digest": 7}]), None),
    ("negative size", doc(layers=[{**LAYER, "size": -1}]), "invalid manifest: layer 0 has an invalid size"),
    ("bool size", doc(layers=[{**LAYER, "size": True}]), "invalid manifest: layer 0 has an invalid size"),
    ("float size", doc(layers=[{**LAYER, "size": 5.0}]), "invalid manifest: layer 0 has an invalid size"),
    ("huge size", doc(layers=[{**LAYER, "size": 10**30}]), "invalid manifest: layer 0 has an invalid size"),
    ("media type with space", doc(layers=[{**LAYER, "mediaType": "a b"}]),
     "invalid manifest: layer 0 has an invalid mediaType"),
    ("too many layers", doc(layers=[LAYER] * (MAX_LAYERS + 1)), f"invalid manifest: more than {MAX_LAYERS} layers"),
    ("too large", b" " * (4 * 1024 * 1024 + 1), "manifest too large: more than 4194304 bytes"),
]


@pytest.mark.parametrize("raw", [raw for _, raw in GOOD], ids=[n for n, _ in GOOD])
def test_good_manifests(raw):
    m = parse_manifest(raw)
    assert m.raw == raw
    assert [d.digest for d in m.blobs()][-1] == D


@pytest.mark.parametrize("raw, message", [(r, m) for _, r, m in BAD], ids=[n for n, _, _ in BAD])
def test_bad_manifests(raw, message):
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw)
    if message is not None:
        assert str(err.value) == message
    else:
        assert "has an invalid digest" in str(err.value)


def test_blobs_are_layers_then_config_each_once():
    m = parse_manifest(doc(layers=[LAYER, CFG, LAYER]))
    assert [d.digest for d in m.blobs()] == [LAYER["digest"], D]
    assert m.total_size() == 15
    assert m.blobs()[0].short == "cd" * 6
