"""The platform's own Prometheus metrics: names defined once, one `/metrics` server per service.

Why one module: every long-running service reports the same few things
(records in and out, rejects, lag, batch durations) under the same names, so
one dashboard or alert rule covers them all; Prometheus tells the services
apart by the scrape target (`job`, `instance`), and `stage` says which part of
a service counted. Each service calls `serve(SERVICE)` once at start (its port
from `METRICS_PORT_<SERVICE>`, 0 = off, on `METRICS_HOST`); `--once` runs
start none. A port already taken costs a warning, never the service.

The metrics live in prometheus-client's default registry, beside its process
and Python collectors (CPU seconds, memory, open files, GC).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from observability.logs import get_logger

log = get_logger(__name__)

# Services with a /metrics port: name -> the Settings field holding it (env METRICS_PORT_<NAME>).
GENERATOR, INGEST, SPARK, DETECTOR, NARRATOR, MODEL_SERVER, NOTIFIER, FORECASTER, INDEXER = (
    "generator",
    "ingest",
    "spark",
    "detector",
    "narrator",
    "model_server",
    "notifier",
    "forecaster",
    "indexer",
)
SERVICES = (GENERATOR, INGEST, SPARK, DETECTOR, NARRATOR, MODEL_SERVER, NOTIFIER, FORECASTER, INDEXER)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

SERVICE_INFO = Gauge("observability_service_info", "1 for the service this process runs", ["service"])
EVENTS_IN = Counter("observability_events_in_total", "Records a stage read or received", ["stage", "kind"])
EVENTS_OUT = Counter("observability_events_out_total", "Records a stage wrote or published", ["stage", "kind"])
REJECTS = Counter("observability_rejects_total", "Records refused or dead-lettered, by reason", ["stage", "reason"])
LAG = Gauge("observability_lag_seconds", "How far the stage's newest processed event time is behind now", ["stage"])
BATCH_SECONDS = Histogram(
    "observability_batch_duration_seconds",
    "Wall time of one batch or cycle of a stage",
    ["stage"],
    buckets=_DURATION_BUCKETS,
)
CYCLE_FAILURES = Counter("observability_cycle_failures_total", "Batches or cycles that failed", ["stage"])
NARRATOR_LATENCY = Histogram(
    "observability_narrator_latency_seconds",
    "Time to write one incident summary, by who wrote it (llm | template)",
    ["generated_by"],
    buckets=_DURATION_BUCKETS,
)
NARRATOR_FALLBACKS = Counter(
    "observability_narrator_fallbacks_total",
    "Summaries written by the template instead of the LLM (grounding | refused | other)",
    ["reason"],
)
ALERT_DELIVERIES = Counter(
    "observability_alert_deliveries_total",
    "Notification attempts by channel kind (webhook | slack | email) and outcome (sent | failed | gave_up)",
    ["channel", "outcome"],
)
SEARCH_TEXTS = Counter(
    "observability_search_texts_total",
    "Distinct texts of the items the indexer wrote: embedded, or found in the content cache",
    ["outcome"],
)
SEARCH_EMBED_SECONDS = Counter(
    "observability_search_embed_cpu_seconds_total", "CPU time the indexer spent embedding texts"
)
BACKLOG = Gauge("observability_backlog", "Work waiting after the stage's last cycle", ["stage"])
HTTP_REQUESTS = Counter("observability_http_requests_total", "HTTP requests served", ["path", "code"])
HTTP_REQUEST_SECONDS = Histogram(
    "observability_http_request_seconds", "HTTP request time, to the last byte", ["path"], buckets=_DURATION_BUCKETS
)
MODEL_TOKENS = Counter("observability_model_tokens_total", "Tokens the model server read and wrote", ["kind"])

_servers: dict[int, object] = {}
_lock = threading.Lock()


def port_for(service: str, settings=None) -> int:
    if settings is None:
        from observability.settings import get_settings

        settings = get_settings()
    return int(getattr(settings, f"metrics_port_{service}"))


def serve(service: str, settings=None, port: int | None = None) -> int | None:
    """Start this process's /metrics server (once); returns its port, or None when off or not bound."""
    if settings is None:
        from observability.settings import get_settings

        settings = get_settings()
    port = port_for(service, settings) if port is None else port
    SERVICE_INFO.labels(service).set(1)
    if port == 0:
        return None
    with _lock:
        if port in _servers:
            return port
        try:
            server, _thread = start_http_server(port, addr=settings.metrics_host, registry=REGISTRY)
        except OSError as exc:
            log.warning("metrics: could not serve /metrics", service=service, port=port, error=str(exc))
            return None
        _servers[port] = server
    log.info("metrics: serving /metrics", service=service, host=settings.metrics_host, port=port)
    return port


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the block's wall time in `observability_batch_duration_seconds{stage}`; count a raise as a failure."""
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        CYCLE_FAILURES.labels(stage).inc()
        raise
    finally:
        BATCH_SECONDS.labels(stage).observe(time.perf_counter() - t0)


def set_lag(stage: str, newest_event_time, now=None) -> None:
    """`observability_lag_seconds{stage}` from the newest processed event time (naive UTC or aware)."""
    if newest_event_time is None:
        return
    import pandas as pd

    from observability.store import utcnow

    ts = pd.Timestamp(newest_event_time)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    LAG.labels(stage).set(max(0.0, (pd.Timestamp(now or utcnow()) - ts).total_seconds()))


def record_batch(
    stage: str,
    *,
    seconds: float | None = None,
    kind: str = "record",
    rows_in: int = 0,
    rows_out: int = 0,
    out_kind: str | None = None,
    rejects: dict[str, int] | None = None,
    newest_event_time=None,
) -> None:
    """One batch of a stage: its records in and out, rejects by reason, wall time and lag."""
    if rows_in:
        EVENTS_IN.labels(stage, kind).inc(rows_in)
    if rows_out:
        EVENTS_OUT.labels(stage, out_kind or kind).inc(rows_out)
    for reason, n in (rejects or {}).items():
        if n:
            REJECTS.labels(stage, reason).inc(n)
    if seconds is not None:
        BATCH_SECONDS.labels(stage).observe(seconds)
    set_lag(stage, newest_event_time)


def instrumented(stage: str, cycle, on_result=None):
    """`cycle` timed in `observability_batch_duration_seconds{stage}`, a raise counted as a failure;
    `on_result(result)` records what the cycle did (a failing recorder never fails the cycle)."""

    def run():
        with timed(stage):
            result = cycle()
        if on_result is not None:
            try:
                on_result(result)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop a service
                log.warning("metrics: recording a cycle failed", stage=stage, error=str(exc)[:300])
        return result

    return run


class RequestMetrics:
    """ASGI middleware: `observability_http_requests_total{path, code}` and request seconds.

    `paths`: the routes to label by name; any other path is `other` (a scanner
    probing random URLs must not grow the label set)."""

    def __init__(self, app, paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.paths = set(paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        label = path if path in self.paths else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            HTTP_REQUESTS.labels(label, str(status["code"])).inc()
            HTTP_REQUEST_SECONDS.labels(label).observe(time.perf_counter() - t0)
