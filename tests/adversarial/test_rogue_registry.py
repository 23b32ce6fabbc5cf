"""A rogue registry on loopback, pulled from by a real `stack serve` (the hostile suite's server,
canary beside its store): each lie is refused with its exact status and message, nothing is
written outside the store, no manifest or blob becomes visible in it, and the server answers
`GET /` within a second afterwards.

The registry is a real one (`tests.support.registry_server.ThreadServer`, holding `team/bot:v1`)
behind `tests.support.faultproxy.FaultProxy`, which replaces chosen answers: gzip bombs, oversized
manifests and error bodies, lying sizes and digests, layer digests with path segments, redirects
and token realms on another host.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import httpx
import pytest

from tests.adversarial.conftest import SECRET, Hostile, tree
from tests.support.faultproxy import FaultProxy, Garbage, Respond
from tests.support.models import manifest_bytes, put_model
from tests.support.registry_server import ThreadServer

MODEL_BYTES = bytes(range(256)) * 4096  # 1 MiB


def _gzip_bomb(inflated: int = 256 << 20) -> bytes:
    """`inflated` zero bytes, gzipped (~1000:1), built a MiB at a time."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    zeros = b"\0" * (1 << 20)
    return b"".join([*(z.compress(zeros) for _ in range(inflated >> 20)), z.flush()])


BOMB = _gzip_bomb()  # 256 MiB of zeros in ~250 KiB


@pytest.fixture(scope="module")
def rogue(hostile: Hostile, tmp_path_factory):
    src = tmp_path_factory.mktemp("rogue")
    manifest = json.loads(put_model(src, "registry.ollama.ai/team/bot/v1", MODEL_BYTES))
    with ThreadServer(src) as registry:
        yield hostile, registry, manifest


def _layer(manifest: dict) -> str:
    return manifest["layers"][0]["digest"]


def _with_layer(manifest: dict, **changes) -> bytes:
    return manifest_bytes(manifest["config"], [{**manifest["layers"][0], **changes}, *manifest["layers"][1:]])


def _cases(registry: ThreadServer, m: dict) -> list:
    d = _layer(m)
    on_manifest = lambda s: "/manifests/" in s.path  # noqa: E731
    on_blob = lambda s: s.path.endswith(d)  # noqa: E731
    return [
        ("manifest-gzip-bomb", on_manifest, Respond(200, BOMB, {"Content-Encoding": "gzip"}),
         502, "pull model manifest: registry answered with an unsupported content encoding 'gzip'"),
        ("blob-gzip-bomb", on_blob, Respond(200, BOMB, {"Content-Encoding": "gzip"}),  # stored raw: never inflated
         502, "blob {d} is smaller than the 1048576 bytes its manifest declares"),
        ("manifest-oversized", on_manifest, Respond(200, b" " * (4 * 1024 * 1024 + 1)),
         502, "pull model manifest: manifest too large: more than 4194304 bytes"),
        ("manifest-oversized-error-body", on_manifest, Respond(403, b"e" * (16 << 20)), 502,
         "pull model manifest: 403"),  # the body is dropped past 64 KiB
        ("blob-oversized-error-body", on_blob, Respond(403, b"e" * (16 << 20)), 502, "403"),
        ("manifest-lying-content-length", on_manifest,
         Respond(200, b'{"schemaVersion": 2}', {"Content-Length": str(1 << 40)}), 502,
         "pull model manifest: manifest too large: more than 4194304 bytes"),
        ("layer-digest-path-segments", on_manifest, Respond(200, _with_layer(m, digest="../../../canary/secret.txt")),
         502, "pull model manifest: invalid manifest: layer 0 has an invalid digest '../../../canary/secret.txt'"),
        ("layer-size-absurd", on_manifest, Respond(200, _with_layer(m, size=1 << 62)), 502,
         "pull model manifest: invalid manifest: layer 0 has an invalid size"),
        ("layer-size-negative", on_manifest, Respond(200, _with_layer(m, size=-1)), 502,
         "pull model manifest: invalid manifest: layer 0 has an invalid size"),
        ("blob-bytes-do-not-hash", on_blob, Respond(200, MODEL_BYTES[::-1]), 502,
         "digest mismatch, file must be downloaded again: want {d}, got sha256:" + hashlib.sha256(MODEL_BYTES[::-1]).hexdigest()),
        ("blob-longer-than-declared", on_blob, Respond(200, MODEL_BYTES + b"more"), 502,
         "blob {d} is larger than the 1048576 bytes its manifest declares"),
        ("blob-shorter-than-declared", on_blob, Respond(200, MODEL_BYTES[:1000]), 502,
         "blob {d} is smaller than the 1048576 bytes its manifest declares"),
        ("blob-redirect-to-another-host", on_blob,
         Respond(307, b"", {"Location": f"http://127.0.0.1:{registry.port}/v2/team/bot/blobs/{d}"}), 502,
         f"registry redirected to another host: http://127.0.0.1:{registry.port}/v2/team/bot/blobs/{d}"),
        ("token-realm-on-another-host", on_manifest,
         Respond(401, b"", {"WWW-Authenticate": 'Bearer realm="http://attacker.example/token",service="x"'}), 401,
         "pull model manifest: realm host 'attacker.example' does not match original host '{proxy}'"),
        ("garbage-instead-of-http", on_manifest, Garbage(), 502,
         "pull model manifest: RemoteProtocolError: illegal status line: bytearray(b'\\x00\\xffnot http at all')"),
    ]


CASE_IDS = ["manifest-gzip-bomb", "blob-gzip-bomb", "manifest-oversized", "manifest-oversized-error-body",
            "blob-oversized-error-body", "manifest-lying-content-length", "layer-digest-path-segments",
            "layer-size-absurd", "layer-size-negative", "blob-bytes-do-not-hash", "blob-longer-than-declared",
            "blob-shorter-than-declared", "blob-redirect-to-another-host", "token-realm-on-another-host",
            "garbage-instead-of-http"]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_rogue_registry(rogue, case_id):
    h, registry, m = rogue
    (_, predicate, action, status, message), = [c for c in _cases(registry, m) if c[0] == case_id]
    before = {k for k in tree(h.server.models, h.root / "nothing") if ".tmp-" not in k}
    with FaultProxy(registry.port) as proxy:
        proxy.add(predicate, action, times=99)
        name = f"{proxy.host}/team/bot:v1"
        r = httpx.post(f"{h.url}/api/pull", json={"model": name, "insecure": True, "stream": False}, timeout=120)
    assert SECRET.decode().strip() not in r.text
    assert (r.status_code, r.json()) == (status, {"error": message.format(d=_layer(m), proxy=proxy.host)})
    after = {k for k in tree(h.server.models, h.root / "nothing") if ".tmp-" not in k}
    assert {k for k in after - before if not k.endswith("-partial")} == set()  # nothing visible
    h.check_intact()
