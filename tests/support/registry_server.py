"""A real uvicorn serving the registry routers over a store directory, in a thread (loopback).

For the protocol tests that need many servers quickly; the end-to-end tests use
`stack serve` subprocesses instead.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from server.registry.routes import router as registry_router
from server.registry.storage import RegistryStore
from server.routes.pull_push import router as pull_push_router


def make_app(models: Path, *, push: bool = True) -> FastAPI:
    app = FastAPI()
    app.state.registry_store = RegistryStore(models)
    app.state.registry_push = push
    app.include_router(registry_router)
    app.include_router(pull_push_router)
    return app


class ThreadServer:
    def __init__(self, models: Path, *, push: bool = True) -> None:
        self.models = Path(models)
        self.app = make_app(self.models, push=push)
        sock = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        for _ in range(500):
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
        return f"http://{self.host}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> "ThreadServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
