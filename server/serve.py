"""What `stack serve` runs: check the exposure, tidy the store, then uvicorn on `OLLAMA_HOST`."""

from __future__ import annotations

import logging
import sys

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


def run(config: Config | None = None) -> None:
    import uvicorn

    from server.app import OLLAMA_API_VERSION, create_app
    from server.header_timeout import protocol
    from server.observe import configure_access_log

    config = config or Config.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_access_log()
    host, port = bind_address(config.host)
    app = create_app(config)
    keys = app.state.keyring.keys()
    check_exposure(config, host, len(keys))
    store = app.state.store
    store.cleanup()
    removed = store.prune()
    if removed:
        logging.getLogger("corral.server").info("pruned %d unused blobs", len(removed))
    auth = f"{len(keys)} API keys" if keys else "no API keys: open"
    print(
        f"Listening on {host}:{port} (version {OLLAMA_API_VERSION}, models {config.models}, {auth})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=config.max_connections or None,
        timeout_keep_alive=config.idle_timeout,
        http=protocol(config.header_timeout),
    )
