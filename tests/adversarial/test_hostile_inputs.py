"""Hostile inputs against a real `stack serve`: each one answered with its exact 4xx status and
message, nothing outside the store created, changed or deleted (a canary file next to the store is
checked after every request), and the server still answering `GET /` within a second afterwards.

The rows are in `tests/adversarial/cases.py`; the tests below cover what a row cannot say
(cut-off bodies, parallel uploads, symlinks planted in the store, framing attacks).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading

import httpx
import ollama
import pytest

from server.http_protocol import TOO_LARGE_RESPONSE
from tests.adversarial.cases import CASES, Case
from tests.adversarial.conftest import PARALLEL, QUEUE, SECRET, Hostile, tree
from tests.support.formats import NEVER_DONE


@pytest.fixture(scope="module")
def ready(hostile: Hostile, tiny_gguf) -> Hostile:
    client = ollama.Client(host=hostile.url)
    digest = client.create_blob(tiny_gguf)
    client.create(model="base", files={"tiny.gguf": digest})
    subs = {"{canary}": str(hostile.canary)}
    for key, data in {
        "{blob}": b"a small blob that is not a model",
        "{gguf4}": b"GGUF",
        "{badgguf}": b"GGUF" + struct.pack("<IQQ", 3, 1 << 63, 1 << 63),
    }.items():
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        assert httpx.post(f"{hostile.url}/api/blobs/{d}", content=data).status_code == 201
        subs[key] = d
    hostile.subs = subs
    hostile.before = tree(hostile.root, hostile.server.models)
    return hostile


def fill(text: str, subs: dict) -> str:
    for k, v in subs.items():
        text = text.replace(k, v)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(ready: Hostile, case: Case):
    store_before = tree(ready.server.models, ready.root / "nothing")
    body = case.body
    if isinstance(body, str):
        body = fill(body, {k: v.replace("\\", "\\\\") for k, v in ready.subs.items()}).encode()
    status, raw = ready.raw(case.method, fill(case.path, ready.subs), body, case.headers)
    answer = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(raw) if raw else ""
    except ValueError:
        parsed = answer
    assert SECRET.decode().strip() not in answer
    expected = case.answer
    if isinstance(expected, dict):
        expected = json.loads(fill(json.dumps(expected), {k: json.dumps(v)[1:-1] for k, v in ready.subs.items()}))
    assert (status, parsed) == (case.status, expected)
    ready.check_intact()
    if case.status >= 400:  # a refused request writes nothing visible in the store either
        after = tree(ready.server.models, ready.root / "nothing")
        assert {k for k in after if "/.tmp-" not in k and not k.startswith("blobs/.tmp-")} == {
            k for k in store_before if "/.tmp-" not in k and not k.startswith("blobs/.tmp-")}


# -- what a table row cannot say --------------------------------------------------------------------


def _blob_files(h: Hostile) -> list[str]:
    return sorted(p.name for p in (h.server.models / "blobs").iterdir())


def _until_no_temp_files(h: Hostile) -> None:
    for _ in range(200):  # bounded: the server removes an aborted upload's temp file when it notices
        if not any(name.startswith(".tmp-") for name in _blob_files(h)):
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"temp files left behind: {_blob_files(h)}")


def test_cut_off_blob_upload_leaves_nothing(ready: Hostile):
    data = os.urandom(1 << 16)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before = _blob_files(ready)
    with socket.create_connection(("127.0.0.1", ready.server.port)) as s:
        s.sendall(f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        s.sendall(data[:1000])  # then hang up mid-body
    _until_no_temp_files(ready)
    assert _blob_files(ready) == before
    ready.check_intact()
    r = httpx.post(f"{ready.url}/api/blobs/{digest}", content=data)  # the retry succeeds
    assert r.status_code == 201 and ("sha256-" + digest[7:]) in _blob_files(ready)


def test_parallel_uploads_of_one_blob(ready: Hostile):
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    statuses: list[int] = []

    def upload() -> None:
        statuses.append(httpx.post(f"{ready.url}/api/blobs/{digest}", content=data, timeout=60).status_code)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) in ([200, 201], [201]) and len(statuses) == 8
    path = ready.server.models / "blobs" / ("sha256-" + digest[7:])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest[7:]
    _until_no_temp_files(ready)
    ready.check_intact()


def test_parallel_creates_of_one_name(ready: Hostile):
    def create(system: str) -> int:
        return httpx.post(f"{ready.url}/api/create", json={"model": "race", "from": "base", "system": system,
                                                            "stream": False}, timeout=60).status_code

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(create(f"s{i}"))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    show = httpx.post(f"{ready.url}/api/show", json={"model": "race"}).json()
    assert show["system"] in {f"s{i}" for i in range(6)}  # one of them won, whole
    assert httpx.request("DELETE", f"{ready.url}/api/delete", json={"model": "race"}).status_code == 200
    ready.check_intact()


def test_symlink_planted_in_the_store_is_never_followed_out(ready: Hostile):
    """Someone with write access to the store planted links to the canary: the store resolves
    every path before use and refuses one that leads outside, so neither show nor delete reads,
    removes or reveals the canary."""
    manifests = ready.server.models / "manifests" / "registry.ollama.ai" / "library" / "planted"
    manifests.mkdir(parents=True)
    (manifests / "latest").symlink_to(ready.canary)
    link_blob = ready.server.models / "blobs" / ("sha256-" + hashlib.sha256(SECRET).hexdigest())
    link_blob.symlink_to(ready.canary)
    try:
        tags = httpx.get(f"{ready.url}/api/tags")
        assert tags.status_code == 200 and "planted" not in tags.text
        r = httpx.post(f"{ready.url}/api/show", json={"model": "planted"})
        assert SECRET.decode().strip() not in r.text
        assert (r.status_code, r.json()) == (400, {"error": "path escapes the model store"})
        r = httpx.request("DELETE", f"{ready.url}/api/delete", json={"model": "planted"})
        assert (r.status_code, r.json()) == (400, {"error": "path escapes the model store"})
        assert SECRET.decode().strip() not in r.text
        assert ready.canary.read_bytes() == SECRET
    finally:
        for link in (manifests / "latest", link_blob):
            if link.is_symlink():
                link.unlink()
        for d in (manifests, manifests.parent):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
    ready.check_intact()


def test_request_smuggling_framing_is_refused(ready: Hostile):
    """Content-Length and Transfer-Encoding together: refused, and the connection closed, so the
    request hidden in the body (by one reading, a second request by the other) is never answered."""
    with socket.create_connection(("127.0.0.1", ready.server.port), timeout=10) as s:
        s.sendall(b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\nGET /api/delete HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = b""
        for _ in range(100):  # bounded: until the server closes the connection
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "request has both Content-Length and Transfer-Encoding"}
    ready.check_intact()


def test_oversized_headers_are_refused(ready: Hostile):
    _, reply = _raw_status(ready, b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    assert reply == TOO_LARGE_RESPONSE
    ready.check_intact()


def _raw_status(h: Hostile, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", h.server.port), timeout=10) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = s.recv(65536)
    return int(reply.split(b" ", 2)[1]), reply


def test_slow_clients_do_not_block_others(ready: Hostile):
    """Fifty connections that send half a request line and stall: everyone else is still served."""
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", ready.server.port), timeout=10)
            s.sendall(b"POST /api/create HTTP/1.1\r\nHost: local")
            socks.append(s)
        ready.check_intact()
        assert httpx.get(f"{ready.url}/api/tags", timeout=1.0).status_code == 200
    finally:
        for s in socks:
            s.close()


# -- things planted in the store (someone with write access to it; CVE-2024-39721's devices) -------------
#
# Each row plants links, FIFOs or directories where the store keeps manifests and blobs, sends one
# request, and expects the store to refuse: a link whose target resolves outside the store is
# "path escapes the model store"; a FIFO, device or directory where a regular file belongs is "path
# is not a regular file in the model store" (a FIFO used to block the request's thread for ever, a
# directory where a blob belongs used to be a 500 naming the server's paths). `{dir}` is the
# canary directory, `{outside}` a copy of base's manifest outside the store, `{port}` the
# server's own port (it pulls and pushes to itself).

ESCAPES = {"error": "path escapes the model store"}
NOT_REGULAR = {"error": "path is not a regular file in the model store"}
# the same refusals on the registry's routes, in its shape
V2_ESCAPES = {"errors": [{"code": "UNSUPPORTED", "message": "path escapes the model store", "detail": None}]}
V2_NOT_REGULAR = {"errors": [{"code": "UNSUPPORTED", "message": "path is not a regular file in the model store",
                             "detail": None}]}
LIB = "manifests/registry.ollama.ai/library"
SELF = "manifests/127.0.0.1:{port}"
SECRET_HEX = hashlib.sha256(SECRET).hexdigest()
FIFO_HEX = hashlib.sha256(b"a fifo").hexdigest()
ZERO_HEX = hashlib.sha256(b"/dev/zero").hexdigest()
DIR_HEX = hashlib.sha256(b"a directory").hexdigest()


def _pull(model: str) -> dict:
    return {"model": model, "insecure": True, "stream": False}


PLANTED = [
    # (id, {store path: ("link", target) | "fifo" | "dir"}, method, path, body, status, answer)
    ("model-dir-link-copy-into", {f"{LIB}/evil": ("link", "{dir}")}, "POST", "/api/copy",
     {"source": "base", "destination": "evil"}, 400, ESCAPES),
    ("model-dir-link-create-into", {f"{LIB}/evil": ("link", "{dir}")}, "POST", "/api/create",
     {"model": "evil", "from": "base", "stream": False}, 400, ESCAPES),
    ("namespace-link-copy-into", {"manifests/registry.ollama.ai/evilns": ("link", "{dir}")}, "POST", "/api/copy",
     {"source": "base", "destination": "evilns/x"}, 400, ESCAPES),
    ("host-link-pull-into", {SELF: ("link", "{dir}")}, "POST", "/api/pull",
     _pull("127.0.0.1:{port}/library/base"), 400, ESCAPES),
    ("manifest-link-push-out", {f"{SELF}/library/planted/latest": ("link", "{outside}")}, "POST", "/api/push",
     _pull("127.0.0.1:{port}/library/planted"), 400, ESCAPES),
    ("manifest-link-served-by-v2", {f"{LIB}/planted/latest": ("link", "{outside}")}, "GET",
     "/v2/library/planted/manifests/latest", None, 400, V2_ESCAPES),
    ("manifest-link-generate", {f"{LIB}/planted/latest": ("link", "{outside}")}, "POST", "/api/generate",
     {"model": "planted", "prompt": "x"}, 400, ESCAPES),
    ("manifest-link-copy-from", {f"{LIB}/planted/latest": ("link", "{outside}")}, "POST", "/api/copy",
     {"source": "planted", "destination": "stolen"}, 400, ESCAPES),
    ("manifest-link-create-from", {f"{LIB}/planted/latest": ("link", "{outside}")}, "POST", "/api/create",
     {"model": "stolen", "from": "planted", "stream": False}, 400, ESCAPES),
    ("blob-link-create-from", {f"blobs/sha256-{SECRET_HEX}": ("link", "{canary}")}, "POST", "/api/create",
     {"model": "stolen", "files": {"m.gguf": f"sha256:{SECRET_HEX}"}}, 400, ESCAPES),
    ("blob-link-served-by-v2", {f"blobs/sha256-{SECRET_HEX}": ("link", "{canary}")}, "GET",
     f"/v2/library/base/blobs/sha256:{SECRET_HEX}", None, 400, V2_ESCAPES),
    ("blob-link-upload-onto", {f"blobs/sha256-{SECRET_HEX}": ("link", "{canary}")}, "POST",
     f"/api/blobs/sha256:{SECRET_HEX}", SECRET, 400, ESCAPES),
    ("blob-device-link-create-from", {f"blobs/sha256-{ZERO_HEX}": ("link", "/dev/zero")}, "POST", "/api/create",
     {"model": "zero", "files": {"m.gguf": f"sha256:{ZERO_HEX}"}}, 400, ESCAPES),
    ("blob-fifo-create-from", {f"blobs/sha256-{FIFO_HEX}": "fifo"}, "POST", "/api/create",
     {"model": "fifo", "files": {"m.gguf": f"sha256:{FIFO_HEX}"}}, 400, NOT_REGULAR),
    ("blob-fifo-head", {f"blobs/sha256-{FIFO_HEX}": "fifo"}, "HEAD", f"/api/blobs/sha256:{FIFO_HEX}", None, 400, ""),
    ("blob-fifo-served-by-v2", {f"blobs/sha256-{FIFO_HEX}": "fifo"}, "GET",
     f"/v2/library/base/blobs/sha256:{FIFO_HEX}", None, 400, V2_NOT_REGULAR),
    ("blob-dir-upload-onto", {f"blobs/sha256-{DIR_HEX}": "dir"}, "POST", f"/api/blobs/sha256:{DIR_HEX}",
     b"a directory", 400, NOT_REGULAR),
    ("manifest-fifo-show", {f"{LIB}/fifo/latest": "fifo"}, "POST", "/api/show", {"model": "fifo"}, 400, NOT_REGULAR),
    ("manifest-fifo-delete", {f"{LIB}/fifo/latest": "fifo"}, "DELETE", "/api/delete", {"model": "fifo"}, 400,
     NOT_REGULAR),
    ("manifest-fifo-served-by-v2", {f"{LIB}/fifo/latest": "fifo"}, "GET", "/v2/library/fifo/manifests/latest",
     None, 400, V2_NOT_REGULAR),
    ("manifest-fifo-copy-onto", {f"{LIB}/fifo/latest": "fifo"}, "POST", "/api/copy",
     {"source": "base", "destination": "fifo"}, 400, NOT_REGULAR),
    ("manifest-dir-copy-onto", {f"{LIB}/dirm/latest": "dir"}, "POST", "/api/copy",
     {"source": "base", "destination": "dirm"}, 400, NOT_REGULAR),
]


@pytest.fixture(scope="module")
def planted_ready(ready: Hostile) -> Hostile:
    outside = ready.root / "outside" / "manifest.json"  # a valid manifest outside the store
    outside.parent.mkdir()
    outside.write_bytes((ready.server.models / LIB / "base" / "latest").read_bytes())
    ready.subs.update({"{dir}": str(ready.root / "canary" / "dir"), "{outside}": str(outside),
                       "{port}": str(ready.server.port)})
    ready.before = tree(ready.root, ready.server.models)
    return ready


@pytest.mark.parametrize("row", PLANTED, ids=[r[0] for r in PLANTED])
def test_planted_in_the_store(planted_ready: Hostile, row):
    h = planted_ready
    _, plants, method, path, body, status, answer = row
    store_before = _visible(h)
    made: list = []
    try:
        for rel, kind in plants.items():
            p = h.server.models / fill(rel, h.subs)
            for parent in reversed(p.parents):
                if parent != h.server.models and parent.is_relative_to(h.server.models) and not os.path.lexists(parent):
                    parent.mkdir()
                    made.append(parent)
            if kind == "fifo":
                os.mkfifo(p)
            elif kind == "dir":
                p.mkdir()
            else:
                p.symlink_to(fill(kind[1], h.subs))
            made.append(p)
        raw = body if isinstance(body, (bytes, type(None))) else fill(json.dumps(body), h.subs).encode()
        got, reply = h.raw(method, fill(path, h.subs), raw, timeout=10)
        assert SECRET.decode().strip() not in reply.decode("utf-8", "replace")
        assert (got, json.loads(reply) if reply else "") == (status, answer)
    finally:
        for p in reversed(made):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()
    assert _visible(h) == store_before  # nothing written through the plant, nothing half-written
    h.check_intact()


def _visible(h: Hostile) -> dict:
    """The store's files and their bytes (not mtimes: reusing a blob refreshes its mtime)."""
    return {k: (size, sha) for k, (size, _, sha) in tree(h.server.models, h.root / "nothing").items()
            if ".tmp-" not in k}


# -- concurrency and slow clients at inference time (the tiny model, loaded for real) -------------------


def _busy_slots(h: Hostile) -> float:
    for line in httpx.get(f"{h.url}/metrics", timeout=5).text.splitlines():
        if line.startswith('corral_model_busy_slots{model="base:latest"} '):
            return float(line.split()[-1])
    return 0.0


def _until(predicate, what: str) -> None:
    for _ in range(600):  # bounded: 30 s
        if predicate():
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"never happened: {what}")


def test_a_slow_reader_holds_only_its_own_slot(ready: Hostile):
    """A client streams an endless generation and reads nothing: its socket buffers fill and the
    server waits on it (memory does not grow with the tokens it would send), while everyone else
    is served, the same model included. When it reads, its stream goes on; when it leaves, its slot
    is freed."""
    body = json.dumps({"model": "base", "prompt": "x", "raw": True, "format": NEVER_DONE,
                       "options": {"num_predict": -1, "temperature": 0}}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small buffers: backpressure comes fast
    try:
        s.connect(("127.0.0.1", ready.server.port))
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        _until(lambda: _busy_slots(ready) == 1, "the slow stream took a slot")
        ready.check_intact()
        out = ollama.Client(host=ready.url).generate(model="base", prompt="a", raw=True, options={"num_predict": 3})
        assert out.done and out.eval_count <= 3  # the same model serves others meanwhile
        s.settimeout(30)
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")  # the stalled stream resumes when read
    finally:
        s.close()
    _until(lambda: _busy_slots(ready) == 0, "the slot freed once the slow reader left")
    ready.check_intact()


def _queued(h: Hostile) -> float:
    for line in httpx.get(f"{h.url}/metrics", timeout=5).text.splitlines():
        if line.startswith('corral_model_queue_depth{model="base:latest"} '):
            return float(line.split()[-1])
    return 0.0


def test_a_queue_over_its_limit_is_503_and_the_server_keeps_serving(ready: Hostile):
    """Endless generations fill the model's slots, more wait in its queue up to OLLAMA_MAX_QUEUE,
    and the next one is refused at once with Ollama's 503; when the clients leave, everything is
    freed and the server is as before."""
    body = {"model": "base", "prompt": "x", "raw": True, "format": NEVER_DONE,
            "options": {"num_predict": -1, "temperature": 0}}
    streaming = threading.Semaphore(0)
    leave = threading.Event()

    def endless() -> None:
        with httpx.stream("POST", f"{ready.url}/api/generate", json=body, timeout=120) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the stream
            assert r.status_code == 200 and json.loads(next(lines))["done"] is False
            streaming.release()
            leave.wait(120)  # then hang up mid-stream

    threads = [threading.Thread(target=endless, daemon=True) for _ in range(PARALLEL + QUEUE)]
    try:
        for t in threads[:PARALLEL]:
            t.start()
        for _ in range(PARALLEL):
            assert streaming.acquire(timeout=60), "a generation never started"
        for t in threads[PARALLEL:]:
            t.start()
        _until(lambda: _queued(ready) == QUEUE, "the queue filled")
        r = httpx.post(f"{ready.url}/api/generate", json={**body, "stream": False}, timeout=30)
        assert (r.status_code, r.json()) == (503, {"error": "server busy, please try again.  maximum pending "
                                                            "requests exceeded"})
        ready.check_intact()
    finally:
        leave.set()
        for t in threads:
            if t.ident:
                t.join(120)
    _until(lambda: _busy_slots(ready) == 0 and _queued(ready) == 0, "slots and queue freed")
    ready.check_intact()


def test_a_huge_stop_list_is_served_without_blocking_others(ready: Hostile):
    """200 000 stop strings (2.7 MB of JSON, under the body limit): the generation ends normally
    and the server answers others meanwhile. (Larger lists meet the 32 MiB body limit.)"""
    body = {"model": "base", "prompt": "a", "raw": True, "stream": False,
            "options": {"num_predict": 3, "temperature": 0, "stop": [f"stop{i}" for i in range(200_000)]}}
    result: list = []
    t = threading.Thread(target=lambda: result.append(httpx.post(f"{ready.url}/api/generate", json=body, timeout=300)))
    t.start()
    try:
        ready.check_intact()  # while it runs
    finally:
        t.join(300)
    r = result[0]
    assert r.status_code == 200 and r.json()["done"] is True and r.json()["eval_count"] <= 3
    ready.check_intact()


def test_cut_off_json_body_leaves_nothing(ready: Hostile):
    """A create whose body stops half-way (the client hangs up): nothing is created, nothing hangs."""
    body = json.dumps({"model": "cutoff", "from": "base", "system": "x" * 10_000, "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", ready.server.port)) as s:
        s.sendall(b"POST /api/create HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:5000])
    ready.check_intact()
    r = httpx.post(f"{ready.url}/api/show", json={"model": "cutoff"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'cutoff:latest' not found"})


# -- exposure: the Host and Origin matrix (CVE-2024-28224: DNS rebinding; browsers on other sites) ------

HOSTS = {"localhost:{port}": True, "127.0.0.1": True, "[::1]:{port}": True, "rebind.attacker.example:{port}": False,
         "localhost.attacker.example": False, "10.0.0.1": False}
ORIGINS = {None: True, "http://localhost:5173": True, "http://127.0.0.1:8080": True, "https://evil.example": False,
           "null": False, "http://localhost.evil.example": False}
ROUTES = [("GET", "/api/tags", None, 200), ("DELETE", "/api/delete", {"model": "absent"}, 404),
          ("POST", "/api/create", {"model": "absent", "from": "nothing", "stream": False}, 404)]


@pytest.mark.parametrize("host", list(HOSTS))
def test_host_and_origin_matrix(ready: Hostile, host):
    """Every Host × Origin pair on a read and two management routes: a foreign Origin is 403 naming
    it (the CORS layer, outermost); then a Host that is not this machine's is 403 naming
    it; only a loopback Host with an allowed Origin or none reaches the route."""
    name = host.format(port=ready.server.port)
    for origin, origin_ok in ORIGINS.items():
        for method, path, body, status in ROUTES:
            headers = {"Host": name, **({"Origin": origin} if origin else {})}
            got, raw = ready.raw(method, path, json.dumps(body).encode() if body else None, headers)
            where = (name, origin, method, path)
            if not origin_ok:  # the CORS layer is outermost: refused before the Host is looked at
                assert (got, json.loads(raw)) == (403, {"error": f"forbidden: origin {json.dumps(origin)} is not allowed "
                                                    "(a browser page may call this server only from an origin listed "
                                                    "in OLLAMA_ORIGINS)"}), where
            elif not HOSTS[host]:
                shown = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
                assert (got, json.loads(raw)) == (403, {"error": f'forbidden: host "{shown}" is not allowed (a loopback '
                                                    "server answers only localhost names; add others to "
                                                    "CORRAL_ALLOWED_HOSTS)"}), where
            else:
                assert got == status, where
    ready.check_intact()
