"""Kill -9 `stack serve` at many moments during uploads, creates, copies, deletes (and the prunes
they do) and pulls; after each kill, `stack fsck` finds the store sound (every manifest parses,
every blob it names exists and hashes to its name; at most invisible leftovers), the restarted
server lists and shows every model, and re-running the interrupted operation succeeds.

The kill moment is random: a worker thread keeps a mix of operations going (blob uploads of
1 KiB-4 MiB, creates with short and long system prompts, copies, deletes, pulls of 1-6 MiB models
from a second server that is never killed) while the test waits
a random 0-400 ms and sends SIGKILL. A failure names the kill point and the interrupted operation. `CORRAL_CRASH_POINTS`
sets how many kills (default 50).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from server.fsck import fsck
from tests.support.server import REPO_ROOT, start_server

POINTS = int(os.environ.get("CORRAL_CRASH_POINTS", "50"))


class Worker(threading.Thread):
    """Runs operations until the server goes away; remembers the one in flight. `source` is the
    address of a second server whose models `team/src0`..`team/src2` it pulls."""

    def __init__(self, url: str, gguf_digest: str, rng: random.Random, source: str) -> None:
        super().__init__(daemon=True)
        self.url, self.gguf_digest, self.rng, self.source = url, gguf_digest, rng, source
        self.current: tuple | None = None
        self.done = threading.Event()

    def op(self) -> tuple:
        kind = self.rng.choice(["upload", "create", "create", "copy", "delete", "pull", "pull"])
        n = self.rng.randrange(4)
        if kind == "upload":
            return ("upload", self.rng.randbytes(self.rng.choice([1 << 10, 1 << 20, 4 << 20])))
        if kind == "create":
            return ("create", f"m{n}", f"system {self.rng.random()}" * self.rng.choice([1, 2000]))
        if kind == "copy":
            return ("copy", f"m{n}", f"c{self.rng.randrange(4)}")
        if kind == "pull":
            return ("pull", f"{self.source}/team/src{n % len(SOURCES)}")
        pulled = f"{self.source}/team/src{n % len(SOURCES)}"  # deleting a pulled model prunes its blobs
        return ("delete", self.rng.choice(["m" + str(n), "c" + str(n), pulled]))

    def run(self) -> None:
        try:
            for _ in range(10_000):  # bounded; the kill ends it long before
                self.current = self.op()
                run_op(self.url, self.gguf_digest, self.current)
        except httpx.HTTPError:
            pass
        finally:
            self.done.set()


def describe(op: tuple) -> str:
    return f"upload of {len(op[1])} bytes" if op[0] == "upload" else " ".join(op[:2])


def run_op(url: str, gguf_digest: str, op: tuple) -> int:
    return send_op(url, gguf_digest, op).status_code


def send_op(url: str, gguf_digest: str, op: tuple) -> httpx.Response:
    kind = op[0]
    if kind == "upload":
        data = op[1]
        return httpx.post(f"{url}/api/blobs/sha256:{hashlib.sha256(data).hexdigest()}", content=data, timeout=30)
    if kind == "create":
        body = {"model": op[1], "files": {"m.gguf": gguf_digest}, "system": op[2], "stream": False}
        return httpx.post(f"{url}/api/create", json=body, timeout=30)
    if kind == "copy":
        return httpx.post(f"{url}/api/copy", json={"source": op[1], "destination": op[2]}, timeout=30)
    if kind == "pull":
        return httpx.post(f"{url}/api/pull", json={"model": op[1], "insecure": True, "stream": False}, timeout=60)
    return httpx.request("DELETE", f"{url}/api/delete", json={"model": op[1]}, timeout=30)


#: The models the source server holds for pulls: the tiny GGUF (which the store under test already
#: has, as Ollama's pulls skip blobs present) and a system prompt of 1-6 MiB each, so a pull downloads,
#: hashes, fsyncs and renames new blobs, then writes a manifest.
SOURCES = [1 << 20, 3 << 20, 6 << 20]


def serve_sources(srv, data: bytes, gguf_digest: str, rng: random.Random) -> None:
    assert httpx.post(f"{srv.url}/api/blobs/{gguf_digest}", content=data).status_code == 201
    for i, size in enumerate(SOURCES):
        system = rng.randbytes(size // 2).hex()
        body = {"model": f"team/src{i}", "files": {"m.gguf": gguf_digest}, "system": system, "stream": False}
        assert httpx.post(f"{srv.url}/api/create", json=body, timeout=60).status_code == 200


@pytest.mark.timeout(1500)
def test_kill_anywhere_loses_nothing(tmp_path: Path, tiny_gguf: Path):
    models = tmp_path / "models"
    rng = random.Random(20261125)
    data = tiny_gguf.read_bytes()
    gguf_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with start_server(models) as srv:
        assert httpx.post(f"{srv.url}/api/blobs/{gguf_digest}", content=data).status_code == 201
        assert run_op(srv.url, gguf_digest, ("create", "m0", "first")) == 200
    with start_server(tmp_path / "source") as source:
        serve_sources(source, data, gguf_digest, rng)
        in_flight = kill_repeatedly(models, gguf_digest, data, rng, f"127.0.0.1:{source.port}")

    print(f"{POINTS} kills, {sum(in_flight.values())} of them with an operation under way: {dict(in_flight)}")
    assert in_flight["pull"] > 0, "no kill landed during a pull"
    r = subprocess.run([sys.executable, "-m", "toolchain.cli", "fsck", "--models", str(models), "--repair", "--grace", "0"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith(": clean")
    assert fsck(models).leftovers == []


def kill_repeatedly(models: Path, gguf_digest: str, data: bytes, rng: random.Random, source: str) -> Counter:
    """POINTS times: start the server, check and re-run what the last kill interrupted, start the
    worker, SIGKILL the server a random moment later, fsck. Returns the interrupted kinds counted."""
    in_flight: Counter = Counter()  # kills that landed while an operation was under way, by kind
    for point in range(POINTS):
        srv = start_server(models)
        worker = None
        try:
            # the store as the previous kill left it, seen through the restarted server
            tags = httpx.get(f"{srv.url}/api/tags").json()["models"]
            for m in tags:
                r = httpx.post(f"{srv.url}/api/show", json={"model": m["name"]})
                assert r.status_code == 200, (point, m["name"], r.text)
            interrupted = None
            if point:
                interrupted = last_op
                # deleting every model that used it removes the GGUF blob (as Ollama prunes); a
                # create that names it by digest then rightly answers 400, so give it back first
                assert httpx.post(f"{srv.url}/api/blobs/{gguf_digest}", content=data).status_code in (200, 201)
                r = send_op(srv.url, gguf_digest, interrupted)
                expected = {200, 404} if interrupted[0] in ("delete", "copy") else {200, 201}
                assert r.status_code in expected, (point, describe(interrupted), r.status_code, r.text)
                if interrupted[0] == "pull":
                    assert r.json()["status"] == "success", (point, r.text)
                    show = httpx.post(f"{srv.url}/api/show", json={"model": interrupted[1]})
                    assert show.status_code == 200 and len(show.json()["system"]) in SOURCES
            worker = Worker(srv.url, gguf_digest, rng, source)
            worker.start()
            worker.done.wait(rng.uniform(0.0, 0.4))
        finally:
            if srv.proc.poll() is None:
                if worker is not None and worker.current is not None and not worker.done.is_set():
                    in_flight[worker.current[0]] += 1
                os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(timeout=30)
        worker.join(timeout=60)
        last_op = worker.current or ("create", "m0", "again")
        report = fsck(models)
        assert report.clean, (point, describe(last_op), report.errors)
    return in_flight


FAILPOINTS = Path(__file__).resolve().parents[1] / "support" / "failpoints"
# A create of a new name writes two new blobs' worth of steps at least (its system blob, then its
# manifest): each is fsync(temp), rename, fsync(directory). Every (point, n) below falls inside it.
NAMED = [(when, "fsync", n) for when in ("before", "after") for n in (1, 2, 3, 4)] + [
    ("after", "replace", n) for n in (1, 2)]


@pytest.mark.timeout(900)
def test_kill_at_named_points_of_a_create(tmp_path: Path, tiny_gguf: Path):
    """SIGKILL just before an fsync (data written, not durable), just after it, and just after a
    rename, at each such call of one create (system blob, then manifest): fsck is clean after
    each, and the create succeeds when run again."""
    models = tmp_path / "models"
    data = tiny_gguf.read_bytes()
    gguf_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with start_server(models) as srv:
        assert httpx.post(f"{srv.url}/api/blobs/{gguf_digest}", content=data).status_code == 201
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAILPOINTS), os.environ.get("PYTHONPATH", "")]))}
    killed = 0
    for i, (when, name, n) in enumerate(NAMED):
        op = ("create", f"named{i}", f"system prompt {i}")
        with start_server(models, env={**env, "CORRAL_KILL_AT": f"{when}:{name}:{n}"}) as srv:
            try:
                run_op(srv.url, gguf_digest, op)
            except httpx.HTTPError:
                srv.proc.wait(timeout=30)  # killed mid-request
            killed += srv.proc.poll() == -signal.SIGKILL
        report = fsck(models)
        assert report.clean, (when, name, n, report.errors)
        with start_server(models) as srv:
            assert run_op(srv.url, gguf_digest, op) == 200, (when, name, n)
            r = httpx.post(f"{srv.url}/api/show", json={"model": op[1]})
            assert r.status_code == 200 and r.json()["system"] == op[2]
        assert fsck(models).clean
    assert killed == len(NAMED)  # every named point was reached
