"""What `stack serve` runs: check the exposure, tidy the store, then uvicorn on `OLLAMA_HOST`, and
the metrics port (`CORRAL_METRICS_ADDR`) in the same event loop when one is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from typing import Any, Iterator

import uvicorn

from server.config import Config, bind_address
from toolchain.errors import CorralError


def check_exposure(config: Config, host: str, key_count: int) -> None:
    """Refuse to serve a non-loopback address without API keys, unless the operator said so."""
    from server.auth import is_loopback_bind

    if is_loopback_bind(host) or key_count or config.allow_unauthenticated:
        return
    raise CorralError(
        f"refusing to listen on {host} without API keys: anyone who can reach it could create, delete "
        f"and push models. Add a key with `stack keys add NAME --scope admin` (keys file {config.keys_file}), "
        "or set CORRAL_ALLOW_UNAUTHENTICATED=1 if a proxy in front does the authentication"
    )


def metrics_address(raw: str) -> tuple[str, int]:
    """`CORRAL_METRICS_ADDR` as (host, port): `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` for every
    interface; the port is required (a default would collide with the API's)."""
    hostpart, sep, port = raw.rpartition(":")
    bracketed = hostpart.startswith("[") and hostpart.endswith("]")
    host = hostpart[1:-1] if bracketed else hostpart
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or (":" in host and not bracketed):
        raise CorralError(f"CORRAL_METRICS_ADDR {raw!r} is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464)")
    return host or "0.0.0.0", int(port)


def check_metrics_exposure(config: Config, host: str) -> None:
    """The metrics port has no keys: refuse a non-loopback one unless the operator said so."""
    from server.auth import is_loopback_bind

    if is_loopback_bind(host) or config.allow_unauthenticated:
        return
    raise CorralError(
        f"refusing to serve metrics on {host}: the metrics port needs no key and shows model names and "
        "traffic. Bind it to a loopback address, set CORRAL_ALLOW_UNAUTHENTICATED=1 if only a private "
        "network or a firewall reaches it, or unset CORRAL_METRICS_ADDR to serve /metrics on the API port "
        "(a user route when keys exist)"
    )


def listen(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CorralError(f"cannot listen on {host}:{port} for {what}: {reason}") from None


def run(config: Config | None = None) -> None:
    from server.app import OLLAMA_API_VERSION, create_app
    from server.http_protocol import protocol
    from server.observe import configure_access_log, metrics_app

    config = config or Config.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_access_log()
    host, port = bind_address(config.host)
    metrics_at = metrics_address(config.metrics_addr) if config.metrics_addr else None
    app = create_app(config)
    keys = app.state.keyring.keys()
    check_exposure(config, host, len(keys))
    if metrics_at:
        check_metrics_exposure(config, metrics_at[0])
    store = app.state.store
    store.cleanup()
    removed = store.prune()
    if removed:
        logging.getLogger("corral.server").info("pruned %d unused blobs", len(removed))
    http = protocol(config.header_timeout, on_refused=app.state.metrics.refused)
    common: dict[str, Any] = dict(log_level="warning", access_log=False, timeout_keep_alive=config.idle_timeout, http=http)
    companion = None
    if metrics_at:
        sock = listen(*metrics_at, "metrics (CORRAL_METRICS_ADDR)")
        companion = (_Companion(uvicorn.Config(metrics_app(app.state.metrics), lifespan="off", **common)), sock)
    auth = f"{len(keys)} API keys" if keys else "no API keys: open"
    print(
        f"Listening on {host}:{port} (version {OLLAMA_API_VERSION}, models {config.models}, {auth})",
        file=sys.stderr,
        flush=True,
    )
    if metrics_at:
        print(f"Metrics on {metrics_at[0]}:{metrics_at[1]}/metrics (no key)", file=sys.stderr, flush=True)
    _Server(uvicorn.Config(app, host=host, port=port, **common), companion).run()


class _Companion(uvicorn.Server):
    """A second uvicorn server (the metrics port) run inside the main one's event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the main server handles SIGINT/SIGTERM and stops this one as it shuts down


class _Server(uvicorn.Server):
    """uvicorn's server, plus an optional companion (server, socket): started before this one accepts
    connections, stopped while this one shuts down (before uvicorn re-raises the signal that stopped it)."""

    def __init__(self, config: uvicorn.Config, companion: tuple[_Companion, socket.socket] | None = None) -> None:
        super().__init__(config)
        self.companion = companion
        self._companion_task: asyncio.Task | None = None

    async def startup(self, sockets: Any = None) -> None:
        if self.companion:
            side, sock = self.companion
            self._companion_task = asyncio.create_task(side.serve(sockets=[sock]))
            for _ in range(1000):  # bounded: its start-up is a listen() on a socket already bound
                if side.started or self._companion_task.done():
                    break
                await asyncio.sleep(0.01)
            if self._companion_task.done():
                self._companion_task.result()  # its failure is ours
        await super().startup(sockets)

    async def shutdown(self, sockets: Any = None) -> None:
        if self.companion:
            self.companion[0].should_exit = True
        await super().shutdown(sockets)
        if self._companion_task:
            await self._companion_task
