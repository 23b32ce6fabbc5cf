"""The real app of `stack serve` (create_app) on uvicorn in a thread, on loopback.

For the protocol tests that need several servers quickly; the end-to-end tests use
`stack serve` subprocesses (tests/support/server.py) instead.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

from server.app import create_app
from server.config import Config
from tests.support.inference_app import serve_in_thread


class ThreadServer:
    def __init__(self, models: Path, *, push: bool = True, tls: tuple[Path, Path] | None = None) -> None:
        """`tls` = (certificate, key) serves HTTPS."""
        self.models = Path(models)
        self.app = create_app(Config.from_env({}, models=self.models, registry_push=push))
        self._stack = contextlib.ExitStack()
        self.url = self._stack.enter_context(serve_in_thread(self.app, tls=tls, lifespan="off"))
        self.port = urlsplit(self.url).port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "ThreadServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
