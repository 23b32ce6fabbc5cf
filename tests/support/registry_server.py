"""The real app of `stack serve` (create_app) on uvicorn in a thread, on loopback.

For the protocol tests that need several servers quickly; the end-to-end tests use
`stack serve` subprocesses (tests/support/server.py) instead.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from server.app import create_app
from server.config import Config


class ThreadServer:
    def __init__(self, models: Path, *, push: bool = True, tls: tuple[Path, Path] | None = None) -> None:
        """`tls` = (certificate, key) serves HTTPS."""
        self.models = Path(models)
        self.scheme = "https" if tls else "http"
        self.app = create_app(Config.from_env({}, models=self.models, registry_push=push))
        sock = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off", **ssl))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        for _ in range(1000):  # bounded wait for start-up
            if self._server.started:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("uvicorn did not start")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> "ThreadServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
