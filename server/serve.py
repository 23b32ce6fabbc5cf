"""What `stack serve` runs: tidy the store, then uvicorn on `OLLAMA_HOST`."""

from __future__ import annotations

import logging
import sys

from server.config import Config, bind_address


def run(config: Config | None = None) -> None:
    import uvicorn

    from server.app import OLLAMA_API_VERSION, create_app

    config = config or Config.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    store = app.state.store
    store.cleanup()
    removed = store.prune()
    if removed:
        logging.getLogger("corral.server").info("pruned %d unused blobs", len(removed))
    host, port = bind_address(config.host)
    print(f"Listening on {host}:{port} (version {OLLAMA_API_VERSION}, models {config.models})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
