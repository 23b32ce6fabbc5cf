"""The FastAPI application of `stack serve`.

`create_app(config)` builds the app: one `Store` on `app.state.store`, the `Config` on
`app.state.config`, the error handlers that turn `server.errors` exceptions (and malformed requests)
into Ollama's `{"error": "..."}` bodies, Ollama's plain-text 404/405 for unknown paths and methods,
and the routers. A new group of routes is one `include_router` line below.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.asgi_errors import error_body
from server.config import Config
from server.errors import ServerError
from server.store import Store

#: The Ollama API version this server reports at /api/version (the API level it implements).
OLLAMA_API_VERSION = "0.12.0"

log = logging.getLogger("corral.server")


def create_app(config: Config | None = None) -> FastAPI:
    config = config or Config.from_env()
    app = FastAPI(title="Corral", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.store = Store(config.models, noprune=config.noprune)

    app.add_exception_handler(ServerError, _server_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

    @app.api_route("/", methods=["GET", "HEAD"])
    def root() -> Response:
        return PlainTextResponse("Ollama is running")

    @app.api_route("/api/version", methods=["GET", "HEAD"])
    def version() -> Response:
        return JSONResponse({"version": OLLAMA_API_VERSION})

    from server.routes import models

    app.include_router(models.router)

    from server.routes import inference

    inference.install(app)  # generate, chat, embed, embeddings, ps; unloads models on shutdown

    from server.registry.routes import router as registry_router
    from server.registry.storage import RegistryStore
    from server.routes.pull_push import router as pull_push_router

    app.state.registry_store = RegistryStore(app.state.store)
    app.include_router(registry_router)
    app.include_router(pull_push_router)
    from server.routes import lock as lock_routes

    lock_routes.install(app)  # /api/corral/lock: the apply lock of `stack apply`

    from server import auth, cors, limits, observe
    from server.openai import routes as openai_routes

    openai_routes.install(app)  # /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models
    # Middleware, innermost first (each add wraps the ones before it):
    limits.install(app, config)  # CORRAL_MAX_CONNECTIONS, CORRAL_MAX_BODY_BYTES, CORRAL_MAX_BLOB_BYTES
    auth.install(app, config)  # Host check, API keys and scopes
    cors.install(app, config.origins)  # OLLAMA_ORIGINS; outside auth so 401/403 carry CORS headers
    observe.install(app, serve_metrics=not config.metrics_addr)  # /metrics, access log: the outermost middleware
    return app


async def _server_error(request: Request, exc: Exception) -> Response:
    """Ollama's `{"error": ...}`; under `/v2/` the registry's `{"errors": [...]}` (a store refusal
    such as a planted link reaches a registry client in the shape it reads)."""
    assert isinstance(exc, ServerError)
    return JSONResponse(error_body(request.url.path, exc.status, exc.message), status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    message = errors[0].get("msg", "invalid request") if errors else "invalid request"
    return JSONResponse({"error": message}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return PlainTextResponse("404 page not found", status_code=404)
    if exc.status_code == 405:
        return PlainTextResponse("405 method not allowed", status_code=405)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": str(exc) or exc.__class__.__name__}, status_code=500)
