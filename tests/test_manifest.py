"""`server.manifest.parse`: what a manifest may be, from the wire (strict) and in a store."""

from __future__ import annotations

import json

import pytest

from server.manifest import MAX_LAYERS, MEDIA_CONFIG, Layer, ManifestError, parse

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
    m = parse(raw, strict=True)
    assert m.raw == raw
    assert [d.digest for d in m.blobs()][-1] == D


@pytest.mark.parametrize("raw, message", [(r, m) for _, r, m in BAD], ids=[n for n, _, _ in BAD])
def test_bad_manifests(raw, message):
    with pytest.raises(ManifestError) as err:
        parse(raw, strict=True)
    if message is not None:
        assert str(err.value) == message
    else:
        assert "has an invalid digest" in str(err.value)


def test_blobs_are_layers_then_config_each_once():
    m = parse(doc(layers=[LAYER, CFG, LAYER]), strict=True)
    assert [d.digest for d in m.blobs()] == [LAYER["digest"], D]
    assert m.size() == 30  # Ollama's size counts every listed descriptor
    assert m.blobs()[0].short == "cd" * 6


# -- the store's reader: what Ollama writes or once wrote ---------------------------------

UPPER = "sha256-" + "CD" * 32
LENIENT = [
    # name, bytes, (schema_version, media_type, config digest, layer digests)
    ("schema 1", doc(schemaVersion=1), (1, None, D, [LAYER["digest"]])),
    ("oci media type", doc(mediaType="application/vnd.oci.image.manifest.v1+json"),
     (2, "application/vnd.oci.image.manifest.v1+json", D, [LAYER["digest"]])),
    ("dash and upper-case digest", doc(layers=[{**LAYER, "digest": UPPER}]), (2, None, D, [LAYER["digest"]])),
    ("no config", doc(config=None), (2, None, "", [LAYER["digest"]])),
    ("no layers", json.dumps({"schemaVersion": 2, "config": CFG}).encode(), (2, None, D, [])),
    ("media type with space", doc(layers=[{**LAYER, "mediaType": "a b"}]), (2, None, D, [LAYER["digest"]])),
]


@pytest.mark.parametrize("raw, want", [(r, w) for _, r, w in LENIENT], ids=[n for n, _, _ in LENIENT])
def test_store_reader_accepts_what_the_wire_refuses(raw, want):
    with pytest.raises(ManifestError):
        parse(raw, strict=True)
    m = parse(raw)
    schema, media_type, config, layers = want
    assert (m.schema_version, m.config.digest, [d.digest for d in m.layers]) == (schema, config, layers)
    assert m.media_type == (media_type or "application/vnd.docker.distribution.manifest.v2+json")
    assert [d.digest for d in m.blobs()] == layers + ([config] if config else [])


@pytest.mark.parametrize("raw", [raw for _, raw in GOOD], ids=[n for n, _ in GOOD])
def test_store_reader_reads_every_wire_manifest_alike(raw):
    assert parse(raw) == parse(raw, strict=True)


STORE_BAD = [name for name, _, _ in BAD if name not in
             {"schema 1", "schema true", "oci index", "no config", "media type with space", "too many layers",
              "dash form", "upper hex"}]


@pytest.mark.parametrize("raw, message", [(r, m) for n, r, m in BAD if n in STORE_BAD], ids=STORE_BAD)
def test_store_reader_refuses_what_is_not_a_manifest(raw, message):
    with pytest.raises(ManifestError) as err:
        parse(raw)
    if message is not None:
        assert str(err.value) == message
    else:
        assert "has an invalid digest" in str(err.value)


def test_layer_json_round_trip():
    layer = Layer(MEDIA_CONFIG, D, 10, from_="base:latest", name="x")
    raw = doc(config=layer.to_json(), layers=[])
    assert parse(raw).config == layer
