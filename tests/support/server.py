"""A real `stack serve` for tests: a subprocess on a free loopback port with its own model store.

    from tests.support.server import start_server

    with start_server(tmp_path / "models") as srv:      # or the `stack_server` fixture
        httpx.get(srv.url)                             # "Ollama is running"
        ollama.Client(host=srv.url)                    # any client, OLLAMA_HOST=srv.host_env

`start_server(models=None, env=None, timeout=60, preexec_fn=None)` starts `python -m toolchain.cli serve` (cwd = the
repo root) with `OLLAMA_HOST=127.0.0.1:<free port>`, `OLLAMA_MODELS=<models>` and `CORRAL_KEYS_FILE`
naming an absent file (so the server is open unless `env` names a keys file), plus `env`, waits
until `GET /` answers, and returns a `ServerProcess`; leaving the `with` block (or `.stop()`) stops
it by PID. The server's output is in `srv.log_path` and shown when start-up fails.

Fixtures (imported by tests/conftest.py): `stack_server` (one per test, store under tmp_path) and
`shared_stack_server` (one per test module, for read-mostly tests).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    models: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def host_env(self) -> str:
        """The value for OLLAMA_HOST that reaches this server."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    models: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    preexec_fn: Callable[[], None] | None = None,
) -> ServerProcess:
    """Start `stack serve` and wait until it answers; raises RuntimeError (with its log) if not.
    `preexec_fn` runs in the child before it starts (e.g. to set a resource limit)."""
    models = Path(models) if models is not None else Path(tempfile.mkdtemp(prefix="corral-models-"))
    models.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="corral-serve-"))
    last_error = ""
    for attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        full_env = {
            **os.environ,
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": str(models),
            "CORRAL_KEYS_FILE": str(log_dir / "no-keys.json"),  # hermetic: never the user's keys
            **(env or {}),
        }
        log_path = log_dir / f"serve-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "toolchain.cli", "serve"],
                cwd=REPO_ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec_fn,
            )
        server = ServerProcess(proc, port, models, log_path, dict(env or {}))
        if _wait_ready(server, timeout):
            return server
        server.stop()
        last_error = server.log()
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"stack serve did not start:\n{last_error}")


def get_root(s: socket.socket) -> bytes:
    """Send `GET /` on a raw, kept-alive connection and read up to the end of its answer."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    reply = b""
    while not reply.endswith(b"Ollama is running"):
        chunk = s.recv(65536)
        assert chunk, "closed before the answer"
        reply += chunk
    return reply


def _wait_ready(server: ServerProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            if httpx.get(server.url + "/", timeout=2).text == "Ollama is running":
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture
def stack_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh `stack serve` with an empty store under tmp_path/models."""
    with start_server(tmp_path / "models") as server:
        yield server


@pytest.fixture(scope="module")
def shared_stack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `stack serve` shared by a test module (its store persists between the module's tests)."""
    with start_server(tmp_path_factory.mktemp("models")) as server:
        yield server
