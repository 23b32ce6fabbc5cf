"""What the server tells its operator: Prometheus metrics and one JSON access-log line per request.

`Metrics` owns one `prometheus_client.CollectorRegistry` per app (so several apps in one process
never share counters) and is served at `GET /metrics` (a `user` route when keys exist, see
`server.auth`), or, with `CORRAL_METRICS_ADDR`, only by `metrics_app` on a port of its own
(`server.serve` runs it). Answers the HTTP protocol gives without the app (408, 431, 400) reach
`Metrics.refused`. `ObserveMiddleware` is a pure ASGI middleware, outermost, so it sees every answer
including the 401/403/413 of the inner ones and times a streaming response to its last byte:

    corral_http_requests_total{route,method,status}       counter
    corral_http_request_duration_seconds{route,method}    histogram (to the last byte)
    corral_http_requests_in_flight                        gauge
    corral_auth_denied_total{status}                      401s and 403s (Host, key, scope)
    corral_prompt_tokens_total{model}                     } filled by `record_generation`,
    corral_generated_tokens_total{model}                  } which the inference routes call
    corral_time_to_first_token_seconds{model}             } once per finished generation
    corral_load_wait_seconds{model}                       }  (queueing plus loading)
    corral_queue_depth, corral_model_queue_depth{model}   } read from the scheduler at
    corral_loaded_models, corral_model_memory_bytes{model},} each scrape (nothing until the
    corral_model_parallel_slots{model},                   } first inference request)
    corral_model_busy_slots{model}                        }
    corral_registry_operations_total{operation,outcome}   /api/pull and /api/push by outcome
                                                          (success, error, cancelled), via `track`
    corral_registry_bytes_total{direction}                pulled (downloaded by /api/pull), pushed
                                                          (uploaded by /api/push), served (blob bytes
                                                          sent by /v2), received (blob bytes uploaded
                                                          to /v2); `count_bytes` for the first two

`route` is the matched route's template (`/api/blobs/{digest}`), never the raw path, so label
values stay few; requests no route matched (404s, and those refused before routing) are
`unmatched`. Code serving a request adds fields to its log line with `note(**fields)` (a context
variable holds the line's fields, so the inference engine can note the model and token counts
without the request object); `record_generation` does so for every generation.

The access log (logger `corral.access`, JSON, one line per request) carries time, client (the
API key's name, never the token), method, route, path, status, model and the noted fields,
duration and time to the first response byte. Headers and bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, AsyncIterator, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

access_log = logging.getLogger("corral.access")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("corral_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.duration = Histogram(
            "corral_http_request_duration_seconds", "Time from request to last response byte", ["route", "method"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("corral_http_requests_in_flight", "Requests being answered", registry=r)
        self.denied = Counter("corral_auth_denied", "Requests refused by the Host or API-key check", ["status"], registry=r)
        self.prompt_tokens = Counter("corral_prompt_tokens", "Prompt tokens evaluated", ["model"], registry=r)
        self.generated_tokens = Counter("corral_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram(
            "corral_time_to_first_token_seconds", "Time from request to first generated token", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.load_wait = Histogram(
            "corral_load_wait_seconds", "Time from request to a slot on a loaded model (queueing and loading)",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.registry_ops = Counter(
            "corral_registry_operations", "Pulls and pushes by outcome", ["operation", "outcome"], registry=r
        )
        self.registry_bytes = Counter(
            "corral_registry_bytes", "Model bytes moved: pulled, pushed, served by /v2, received by /v2",
            ["direction"], registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def refused(self, status: int, method: str, reason: str, seconds: float) -> None:
        """Count and log an answer the HTTP protocol gave without the app (a 408 for a head that
        took too long, a 431 or 400 for one h11 refused; `server.http_protocol`): route
        `unmatched`, the method when the head got that far, no path."""
        self.requests.labels("unmatched", method, str(status)).inc()
        self.duration.labels("unmatched", method).observe(seconds)
        _log_request({"method": method or None}, "unmatched", status, seconds, seconds, {"error": reason})

    def record_generation(
        self,
        model: str,
        *,
        prompt_tokens: int = 0,
        generated_tokens: int = 0,
        ttft_seconds: float | None = None,
        load_wait_seconds: float | None = None,
    ) -> None:
        """Account one finished generation (the inference engine calls this) and note it in the
        request's access-log line."""
        self.prompt_tokens.labels(model).inc(max(prompt_tokens, 0))
        self.generated_tokens.labels(model).inc(max(generated_tokens, 0))
        if ttft_seconds is not None:
            self.ttft.labels(model).observe(ttft_seconds)
        if load_wait_seconds is not None:
            self.load_wait.labels(model).observe(load_wait_seconds)
        note(
            model=model, prompt_tokens=prompt_tokens, generated_tokens=generated_tokens,
            ttft_ms=round(ttft_seconds * 1000, 3) if ttft_seconds is not None else None,
            load_wait_ms=round(load_wait_seconds * 1000, 3) if load_wait_seconds is not None else None,
        )

    def watch_scheduler(self, engine_of: Callable[[], Any]) -> None:
        """Report the scheduler of `engine_of()` (None until the first inference request)."""
        self.registry.register(_SchedulerCollector(engine_of))


class _SchedulerCollector(Collector):
    def __init__(self, engine_of: Callable[[], Any]) -> None:
        self.engine_of = engine_of

    def describe(self) -> list:
        return []  # collected lazily: the engine may not exist yet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.engine_of()
        scheduler = getattr(engine, "scheduler", None)
        if scheduler is None:
            return
        yield GaugeMetricFamily("corral_queue_depth", "Requests waiting for a runner", value=scheduler.pending)
        queued = GaugeMetricFamily("corral_model_queue_depth", "Requests waiting for a model (to load or for a slot)",
                                   labels=["model"])
        for name, count in scheduler.queued():
            queued.add_metric([name], count)
        yield queued
        rows = scheduler.running()
        yield GaugeMetricFamily("corral_loaded_models", "Models loaded in memory", value=len(rows))
        memory = GaugeMetricFamily("corral_model_memory_bytes", "Estimated memory of a loaded model", labels=["model"])
        slots = GaugeMetricFamily("corral_model_parallel_slots", "Parallel sequences of a loaded model", labels=["model"])
        for ref, spec, _expires, _runner in rows:
            memory.add_metric([ref.name], ref.size)
            slots.add_metric([ref.name], spec.num_parallel)
        yield memory
        yield slots
        busy = GaugeMetricFamily("corral_model_busy_slots", "Slots of a loaded model serving a request", labels=["model"])
        for name, count in scheduler.busy_slots():
            busy.add_metric([name], count)
        yield busy


_metrics: ContextVar[Metrics | None] = ContextVar("corral_metrics", default=None)


def count_bytes(direction: str, n: int) -> None:
    """Count `n` model bytes moved for the request being served (tasks it starts inherit it)."""
    metrics = _metrics.get()
    if metrics is not None and n > 0:
        metrics.registry_bytes.labels(direction).inc(n)


async def track(operation: str, progress: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """Pass a pull's or push's progress through and count its outcome once it ends."""
    outcome = "cancelled"
    try:
        async for message in progress:
            if message.get("status") == "success":
                outcome = "success"
            yield message
    except Exception:
        outcome = "error"
        raise
    finally:
        metrics = _metrics.get()
        if metrics is not None:
            metrics.registry_ops.labels(operation, outcome).inc()


def _blob_direction(scope: dict) -> str | None:
    """`served` for a /v2 blob download, `received` for a /v2 blob upload, else None."""
    path = scope.get("path", "")
    if not path.startswith("/v2/") or "/blobs/" not in path:
        return None
    method = scope.get("method")
    if method == "GET" and "/blobs/uploads/" not in path:
        return "served"
    if method in ("POST", "PATCH", "PUT") and "/blobs/uploads/" in path:
        return "received"
    return None


_line: ContextVar[dict[str, Any] | None] = ContextVar("corral_access_log_fields", default=None)


def note(**fields: Any) -> None:
    """Add fields (model, token counts, ...) to the access-log line of the request being served."""
    line = _line.get()
    if line is not None:
        line.update(fields)


def route_label(scope: dict) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class ObserveMiddleware:
    def __init__(self, app: Any, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        first_byte: float | None = None
        direction = _blob_direction(scope)
        blob_bytes = self.metrics.registry_bytes.labels(direction) if direction else None

        async def observed_send(message: dict) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                if first_byte is None:
                    first_byte = time.perf_counter() - start
                if direction == "served" and status in (200, 206):
                    blob_bytes.inc(len(message.get("body", b"")))
            await send(message)

        async def observed_receive() -> dict:
            message = await receive()
            if direction == "received" and message["type"] == "http.request":
                blob_bytes.inc(len(message.get("body", b"")))
            return message

        fields: dict[str, Any] = {}
        reset = _line.set(fields)
        reset_metrics = _metrics.set(self.metrics)
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, observed_receive if direction else receive, observed_send)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            status = status or 500  # the app failed before answering (uvicorn sends a 500)
            route, method = route_label(scope), scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.duration.labels(route, method).observe(elapsed)
            if status in (401, 403) and "route" not in scope:
                self.metrics.denied.labels(str(status)).inc()
            _log_request(scope, route, status, elapsed, first_byte, fields)
            _line.reset(reset)
            _metrics.reset(reset_metrics)


def _log_request(scope: dict, route: str, status: int, elapsed: float, first_byte: float | None,
                 fields: dict[str, Any]) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    state = scope.get("state") or {}
    line: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
        "client": state.get("corral.client"),
        "method": scope.get("method"),
        "route": route,
        "path": scope.get("path"),
        "status": status,
    }
    line.update(fields)
    line["duration_ms"] = round(elapsed * 1000, 3)
    line["first_byte_ms"] = round(first_byte * 1000, 3) if first_byte is not None else None
    access_log.info(json.dumps(line, default=str))


def configure_access_log(stream: Any = None) -> None:
    """Send `corral.access` lines, bare JSON, to `stream` (stderr), not through the root format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.handlers[:] = [handler]
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def metrics_app(metrics: Metrics) -> Callable[..., Any]:
    """The whole ASGI app of the separate metrics port (`CORRAL_METRICS_ADDR`): `GET`/`HEAD /metrics`
    and nothing else (Ollama's plain-text 404 and 405), no key, no access log."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") != "/metrics":
            status, body, ctype = 404, b"404 page not found", "text/plain; charset=utf-8"
        elif scope.get("method") not in ("GET", "HEAD"):
            status, body, ctype = 405, b"405 method not allowed", "text/plain; charset=utf-8"
        else:
            status, body, ctype = 200, metrics.render(), Metrics.content_type
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    return app


def install(app: Any, *, serve_metrics: bool = True) -> None:
    """The middleware (add it last: it must be the outermost) and, unless the metrics have a port of
    their own (`serve_metrics=False`, then `/metrics` here is an unknown path), `GET /metrics`."""
    from starlette.responses import Response

    app.state.metrics = Metrics()
    app.state.metrics.watch_scheduler(lambda: getattr(app.state, "engine", None))

    if serve_metrics:
        @app.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
        def metrics() -> Response:
            return Response(app.state.metrics.render(), media_type=Metrics.content_type)

    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics)
