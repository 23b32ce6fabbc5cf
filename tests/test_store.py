"""The store contract: layout, digests, atomic writes, pruning, case-insensitive names."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from server import gojson
from server.errors import BadRequest, DigestMismatch, InvalidDigest, InvalidName, MissingBlob, ModelNotFound
from server.manifest import (
    MEDIA_CONFIG,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    digest_of,
    normalize_digest,
)
from server.store import Store
from toolchain.names import Name, parse_name

HEX = "a" * 64
REPO_ROOT = Path(__file__).resolve().parents[1]


def visible(store: Store) -> set[str]:
    """Every file a reader could see: blobs by name and manifests by path (temp files excluded)."""
    found = {p.name for p in store.blobs_dir.iterdir() if not p.name.startswith(".tmp-")}
    found |= {
        str(p.relative_to(store.manifests_dir))
        for p in store.manifests_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".tmp-")
    }
    return found


def all_files(store: Store) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


def make_model(store: Store, name: str, *contents: bytes) -> Manifest:
    layers = []
    for i, data in enumerate(contents):
        r = store.put_bytes(data)
        layers.append(Layer(MEDIA_MODEL if i == 0 else MEDIA_TEMPLATE, r.digest, r.size))
    cfg = store.put_bytes(b'{"model_format":"gguf"}\n')
    return store.write_manifest(parse_name(name), Manifest(Layer(MEDIA_CONFIG, cfg.digest, cfg.size), layers))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


# -- digests ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "given, expected",
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX}", f"sha256:{HEX}"),
        (f"sha256:{'AB' * 32}", f"sha256:{'ab' * 32}"),
        ("sha256:../../x", None),
        (f"sha256:../{HEX[3:]}", None),
        (f"sha256:{HEX[:-1]}", None),
        (f"sha256:{HEX}0", None),
        (f"sha256:{HEX}\n", None),
        (f"sha512:{HEX}", None),
        (f"sha256:{'g' * 64}", None),
        (f"sha256:{HEX}/x", None),
        ("", None),
        (HEX, None),
    ],
)
def test_normalize_digest(given, expected):
    if expected is None:
        with pytest.raises(InvalidDigest, match="invalid digest format"):
            normalize_digest(given)
    else:
        assert normalize_digest(given) == expected


def test_blob_path_never_leaves_blobs_dir(store):
    assert store.blob_path(f"sha256:{HEX}") == store.blobs_dir / f"sha256-{HEX}"
    with pytest.raises(InvalidDigest):
        store.blob_path("sha256:../../../etc/passwd")


# -- blobs -----------------------------------------------------------------------------------

def test_write_blob_hashes_and_stores(store):
    data = b"hello" * 1000
    r = store.write_blob([data[:10], data[10:]], expected=digest_of(data))
    assert (r.digest, r.size, r.created) == (digest_of(data), len(data), True)
    assert store.blob_path(r.digest).read_bytes() == data
    assert oct(store.blob_path(r.digest).stat().st_mode & 0o777) == "0o644"
    again = store.write_blob([data])
    assert again.created is False
    assert visible(store) == {f"sha256-{hashlib.sha256(data).hexdigest()}"}


def test_digest_mismatch_keeps_nothing(store):
    with pytest.raises(DigestMismatch) as err:
        store.write_blob([b"not what was promised"], expected=f"sha256:{HEX}")
    assert err.value.status == 400
    assert str(err.value) == f'digest mismatch, expected "sha256:{HEX}", got "{digest_of(b"not what was promised")}"'
    assert all_files(store) == []


def test_failure_mid_write_leaves_nothing_visible(store):
    def chunks():
        yield b"x" * 4096
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write_blob(chunks())
    assert all_files(store) == []


def test_killed_writer_leaves_no_visible_blob(store):
    """kill -9 while a blob is half written: no blob appears; cleanup removes the temp file."""
    script = textwrap.dedent(
        f"""
        import sys
        from server.store import Store
        def chunks():
            yield b"y" * 65536
            print("written", flush=True)
            sys.stdin.readline()  # block until killed
            yield b"z"
        Store({str(store.root)!r}).write_blob(chunks())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"written"
        assert len(all_files(store)) == 1  # only the temp file exists
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert visible(store) == set()
    assert store.cleanup(grace_seconds=0) and all_files(store) == []


CLEANUP_CASES = [
    # file under the store root, age in seconds, removed by cleanup (grace: one hour)
    ("blobs/.tmp-0123456789abcdef", 7200, True),
    ("blobs/.tmp-fedcba9876543210", 60, False),  # another server's write in progress
    ("manifests/registry.ollama.ai/library/m/.tmp-00000000aaaaaaaa", 7200, True),
    (f"blobs/sha256-{HEX}-partial", 7200, True),
    (f"blobs/sha256-{'b' * 64}-partial", 60, False),  # resumed by the next pull, or being written
    (f"blobs/sha256-{'c' * 64}-partial-3", 7200, True),  # Ollama's part state
    (f"blobs/sha256-{'D' * 64}-partial", 7200, True),
    ("blobs/sha256-abc-partial", 7200, False),  # not a download of ours: left for fsck to report
    (f"blobs/sha256-{HEX}-partial.bak", 7200, False),
    ("blobs/notes.txt", 7200, False),
]


def test_cleanup_removes_only_stale_leftovers(store):
    now = time.time()
    for rel, age, _ in CLEANUP_CASES:
        path = store.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
        os.utime(path, (now - age, now - age))
    kept = store.put_bytes(b"a blob")
    old = now - 7200
    os.utime(store.blob_path(kept.digest), (old, old))
    removed = store.cleanup()
    assert sorted(str(p.relative_to(store.root)) for p in removed) == sorted(rel for rel, _, gone in CLEANUP_CASES if gone)
    for rel, _, gone in CLEANUP_CASES:
        assert (store.root / rel).exists() != gone, rel
    assert store.has_blob(kept.digest)


def test_cleanup_leaves_a_symlinked_partial_alone(store, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x")
    link = store.blobs_dir / f"sha256-{HEX}-partial"
    link.symlink_to(target)
    old = time.time() - 7200
    os.utime(link, (old, old), follow_symlinks=False)
    assert store.cleanup() == []
    assert link.is_symlink() and target.exists()


# -- manifests -------------------------------------------------------------------------------

def test_manifest_written_like_ollama(store):
    model = store.put_bytes(b"GGUF-weights")
    cfg = store.put_bytes(b"{}\n")
    m = store.write_manifest(
        parse_name("llama3.2"),
        Manifest(Layer(MEDIA_CONFIG, cfg.digest, cfg.size), [Layer(MEDIA_MODEL, model.digest, model.size, from_="m.gguf")]),
    )
    path = store.manifests_dir / "registry.ollama.ai" / "library" / "llama3.2" / "latest"
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        f'"config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{cfg.digest}","size":3}},'
        f'"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"{model.digest}","size":12,"from":"m.gguf"}}]}}\n'
    )
    assert path.read_text() == expected
    assert m.digest == hashlib.sha256(expected.encode()).hexdigest()
    assert m.size() == 15


def test_same_manifest_twice_same_digest(store):
    a = make_model(store, "a", b"weights", b"{{ .Prompt }}")
    b = make_model(store, "b", b"weights", b"{{ .Prompt }}")
    assert a.digest == b.digest


def test_manifest_naming_missing_blob_is_rejected(store):
    cfg = store.put_bytes(b"{}\n")
    with pytest.raises(MissingBlob) as err:
        store.write_manifest(
            parse_name("x"), Manifest(Layer(MEDIA_CONFIG, cfg.digest, 3), [Layer(MEDIA_MODEL, f"sha256:{HEX}", 1)])
        )
    assert err.value.status == 400 and HEX in str(err.value)
    assert not store.exists(parse_name("x"))
    assert not list(store.manifests_dir.rglob("*")) or all(p.is_dir() for p in store.manifests_dir.rglob("*"))


def test_failed_rename_keeps_old_manifest(store, monkeypatch):
    old = make_model(store, "m", b"one")
    real_replace = os.replace

    def failing_replace(src, dst):
        if "manifests" in str(dst):
            raise OSError("disk on fire")
        return real_replace(src, dst)

    monkeypatch.setattr("server.store.os.replace", failing_replace)
    with pytest.raises(OSError):
        make_model(store, "m", b"two")
    monkeypatch.undo()
    assert store.read_manifest(parse_name("m")).digest == old.digest
    assert not [p for p in all_files(store) if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"layers": "x"}',
        b'{"config": {"mediaType": "x", "digest": "sha256:../../etc/passwd", "size": 1}, "layers": []}',
        b'{"config": {"mediaType": "x", "digest": "sha256:' + b"a" * 64 + b'", "size": -1}, "layers": []}',
        b'{"layers": [{"mediaType": "x", "digest": "", "size": 0}]}',
    ],
)
def test_malformed_manifest_bytes_are_rejected(store, raw):
    with pytest.raises(BadRequest):
        store.write_manifest(parse_name("x"), raw)
    assert visible(store) == set()


def test_invalid_names_never_build_paths(store):
    for name in [Name(host="..", namespace="library", model="m", tag="latest"),
                 Name(host="h", namespace="n", model="..", tag="t"),
                 Name(host="h", namespace="n", model="m", tag="../../etc")]:
        with pytest.raises(InvalidName):
            store.manifest_path(name)
        with pytest.raises(InvalidName):
            store.read_manifest(name)


# -- an Ollama-written store -----------------------------------------------------------------

def test_reads_a_store_laid_out_by_ollama(tmp_path):
    """Built by hand from the documented format: legacy config keys, a pulled (indented) manifest."""
    root = tmp_path / "ollama"
    blobs = root / "blobs"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{hexd}").write_bytes(data)
        return hexd

    weights = blob(b"GGUF\x03\x00\x00\x00" + b"\x00" * 16)
    template = blob(b"{{ .Prompt }}")
    params = blob(b'{"stop":["\\u003c/s\\u003e"],"temperature":0.6}\n')
    config = blob(
        b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"3.2B",'
        b'"file_type":"Q4_K_M","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}\n'
    )
    manifest_text = (
        '{\n  "schemaVersion": 2,\n  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n'
        f'  "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:{config}", "size": 180}},\n'
        f'  "layers": [{{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:{weights}", "size": 24}},\n'
        f'   {{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:{template}", "size": 13}},\n'
        f'   {{"mediaType": "application/vnd.ollama.image.params", "digest": "sha256:{params}", "size": 47}}]\n}}'
    )
    mdir = root / "manifests" / "registry.ollama.ai" / "library" / "Llama3.2"
    mdir.mkdir(parents=True)
    (mdir / "latest").write_text(manifest_text)
    (root / "manifests" / "registry.ollama.ai" / "library" / "junk-file").write_text("ignored")

    store = Store(root)
    [entry] = store.list()
    assert entry.name.display_shortest() == "Llama3.2:latest"
    m = store.read_manifest(parse_name("llama3.2"))  # case-insensitive
    assert m.raw == manifest_text.encode()
    assert m.digest == hashlib.sha256(manifest_text.encode()).hexdigest()
    assert [layer.media_type for layer in m.layers] == [MEDIA_MODEL, MEDIA_TEMPLATE, MEDIA_PARAMS]
    assert store.read_blob(m.layers[1].digest) == b"{{ .Prompt }}"
    assert store.resolve(parse_name("LLAMA3.2:LATEST")).model == "Llama3.2"
    assert store.resolve(parse_name("llama3.2:v2")).model == "Llama3.2"


def test_case_insensitive_names_share_one_manifest(store):
    make_model(store, "MyModel:Tag", b"one")
    make_model(store, "mymodel:tag", b"two")
    [entry] = store.list()
    assert entry.name.model == "MyModel" and entry.name.tag == "Tag"


def test_digest_pinned_name(store):
    m = make_model(store, "pinned", b"w")
    assert store.read_manifest(parse_name(f"pinned@sha256:{m.digest}")).digest == m.digest
    with pytest.raises(ModelNotFound):
        store.read_manifest(parse_name(f"pinned@sha256:{HEX}"))


# -- copy, delete, prune ---------------------------------------------------------------------

def test_copy_shares_blobs_and_bytes(store):
    m = make_model(store, "src", b"w")
    copied = store.copy(parse_name("src"), parse_name("ns/dst:v1"))
    assert copied.raw == m.raw
    assert {e.name.display_shortest() for e in store.list()} == {"src:latest", "ns/dst:v1"}
    with pytest.raises(ModelNotFound):
        store.copy(parse_name("missing"), parse_name("x"))


def test_delete_prunes_only_unshared_blobs(store):
    a = make_model(store, "a", b"shared", b"only-a")
    make_model(store, "b", b"shared")
    store.delete(parse_name("a"))
    names = visible(store)
    assert f"sha256-{a.layers[0].digest[7:]}" in names  # shared weights kept
    assert f"sha256-{a.layers[1].digest[7:]}" not in names  # a's own layer pruned
    assert not (store.manifests_dir / "registry.ollama.ai" / "library" / "a").exists()
    with pytest.raises(ModelNotFound):
        store.delete(parse_name("a"))


def test_noprune_keeps_blobs(tmp_path):
    store = Store(tmp_path, noprune=True)
    a = make_model(store, "a", b"w", b"t")
    store.delete(parse_name("a"))
    assert all(store.has_blob(d.digest) for d in a.blobs())
    assert store.prune(grace_seconds=0) == []


def test_replacing_a_manifest_prunes_its_old_layers(store):
    old = make_model(store, "m", b"w", b"old template")
    make_model(store, "m", b"w", b"new template")
    assert not store.has_blob(old.layers[1].digest)
    assert store.has_blob(old.layers[0].digest)


def test_startup_prune(store):
    make_model(store, "keep", b"w")
    orphan = store.put_bytes(b"orphan")
    fresh = store.put_bytes(b"fresh orphan")
    old = time.time() - 7200
    os.utime(store.blob_path(orphan.digest), (old, old))
    assert store.prune() == [orphan.digest]
    assert store.has_blob(fresh.digest)  # inside the grace period


def test_prune_skipped_when_a_manifest_is_corrupt(store):
    orphan = store.put_bytes(b"orphan")
    bad = store.manifests_dir / "registry.ollama.ai" / "library" / "bad"
    bad.mkdir(parents=True)
    (bad / "latest").write_text("{truncated")
    assert store.prune(grace_seconds=0) == []
    assert store.has_blob(orphan.digest)
    assert store.list() == []


def test_pinned_blobs_survive_prune(store):
    orphan = store.put_bytes(b"about to be used")
    with store.pin([orphan.digest]):
        assert store.prune(grace_seconds=0) == []
    assert store.prune(grace_seconds=0) == [orphan.digest]


def test_concurrent_creates_of_one_name_are_serialised(store):
    errors = []

    def worker(i: int) -> None:
        try:
            with store.lock(parse_name("race")):
                make_model(store, "race", b"w", f"t{i}".encode())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    [entry] = store.list()
    # exactly the blobs of the surviving manifest (plus nothing half-written) remain
    referenced = {f"sha256-{d.digest[7:]}" for d in entry.manifest.blobs()}
    assert {n for n in visible(store) if n.startswith("sha256-")} == referenced


# -- Go-compatible JSON ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        ({"temperature": 0.7, "stop": ["<|eot_id|>"], "top_k": 1}, '{"stop":["\\u003c|eot_id|\\u003e"],"temperature":0.7,"top_k":1}'),
        ({"x": 1.0}, '{"x":1}'),
        ({"x": 1e-7}, '{"x":1e-7}'),
        ({"x": 1e21}, '{"x":1e+21}'),
        ({"x": 1e20}, '{"x":100000000000000000000}'),
        ({"x": "a&b\u2028\x01\n"}, '{"x":"a\\u0026b\\u2028\\u0001\\n"}'),
        ([{"role": "user", "content": "hi"}], '[{"role":"user","content":"hi"}]'),
    ],
)
def test_gojson(value, expected):
    assert gojson.encode(value, sort_keys=isinstance(value, dict)) == (expected + "\n").encode()


def test_verify_reports_damage(store):
    m = make_model(store, "m", b"weights", b"template")
    assert store.verify() == []
    store.blob_path(m.layers[1].digest).write_bytes(b"tampered")
    store.blob_path(m.layers[0].digest).unlink()
    problems = store.verify()
    assert any("missing blob" in p for p in problems) and any("hashes to" in p for p in problems)


def test_disk_full_is_507_and_leaves_nothing(store, monkeypatch):
    import errno as errno_mod

    def full(_f):
        raise OSError(errno_mod.ENOSPC, "No space left on device")

    monkeypatch.setattr("server.store._fsync_file", full)
    with pytest.raises(Exception) as err:
        store.put_bytes(b"data")
    assert getattr(err.value, "status", None) == 507
    assert all_files(store) == []


def test_store_lock_excludes_other_processes(store):
    """The store lock is an flock: another process cannot take it while this one holds it."""
    probe = textwrap.dedent(
        f"""
        import fcntl, os
        fd = os.open({str(store.root / ".corral-store.lock")!r}, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free")
        except BlockingIOError:
            print("busy")
        """
    )

    def other_process_sees() -> str:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout.strip()

    with store._store_lock:
        with store._store_lock:  # re-entrant within the process
            pass
        assert other_process_sees() == "busy"
    assert other_process_sees() == "free"
