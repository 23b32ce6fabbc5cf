"""The hostile-input suite's fixtures: one real `stack serve` whose store sits next to a canary.

    <root>/canary/secret.txt      must never be read into an answer, changed or deleted
    <root>/canary/dir/            must never gain a file
    <root>/models/                the store

`hostile` (module scope) yields a `Hostile` with the server, the canary and `check_intact()`,
which every case calls after its request: the canary is byte-for-byte and mtime-for-mtime the
same, nothing appeared or vanished outside the store, and the server still answers `GET /`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.support.server import ServerProcess, start_server

BLOB_LIMIT = 8 << 20  # CORRAL_MAX_BLOB_BYTES of the hostile server
PARALLEL = 2  # OLLAMA_NUM_PARALLEL: slots per model
QUEUE = 2  # OLLAMA_MAX_QUEUE: requests that may wait for one
SECRET = b"canary: if this text appears in an answer or this file changes, a hostile input got out\n"


def tree(root: Path, skip: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `root` except under `skip`: (size, mtime_ns, sha256)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
    return out


@dataclass
class Hostile:
    server: ServerProcess
    root: Path
    canary: Path
    before: dict

    @property
    def url(self) -> str:
        return self.server.url

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes]:
        """One request with the path and headers sent exactly as given (no client normalisation)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            headers = {"Host": f"127.0.0.1:{self.server.port}", **(headers or {})}
            if body is not None and "Content-Length" not in headers and "Transfer-Encoding" not in headers:
                headers["Content-Length"] = str(len(body))
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            if body:
                conn.send(body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def check_intact(self) -> None:
        assert self.canary.read_bytes() == SECRET
        assert tree(self.root, self.server.models) == self.before, "something outside the store changed"
        started = time.monotonic()
        r = httpx.get(self.url + "/", timeout=1.0)  # still answering, promptly
        took = time.monotonic() - started  # httpx's timeout bounds each phase, not the whole request
        assert (r.status_code, r.text) == (200, "Ollama is running")
        assert took < 1.0, f"GET / took {took:.2f} s"
        assert self.server.proc.poll() is None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "canary" / "dir").mkdir(parents=True)
    canary = root / "canary" / "secret.txt"
    canary.write_bytes(SECRET)
    env = {"CORRAL_MAX_BLOB_BYTES": str(BLOB_LIMIT), "OLLAMA_NUM_PARALLEL": str(PARALLEL), "OLLAMA_MAX_QUEUE": str(QUEUE)}
    with start_server(root / "models", env=env) as srv:
        yield Hostile(srv, root, canary, tree(root, srv.models))
