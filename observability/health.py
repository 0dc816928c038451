"""Component health checks, shared by the monitoring DAG, `make health` and the dashboard.

Each check looks at one component's newest sign of life (a heartbeat row, a
progress row, an HTTP health endpoint) and returns a `CheckResult`. Freshness
is graded against a setting: healthy while the sign is at most `max_age` old,
degraded up to `UNHEALTHY_FACTOR` times that, unhealthy beyond or when there
is none. A check never raises: an error becomes an unhealthy result naming it,
so one broken component never hides the others.

`python -m observability.health [--record]` prints the results (exit 1 when a
component is unhealthy); `--record` also writes them to `health_checks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import httpx

from observability import summaries, tables
from observability.logs import get_logger
from observability.settings import Settings, get_settings
from observability.store import Store, utcnow

log = get_logger(__name__)

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
UNHEALTHY_FACTOR = 3.0
# Rows of `heartbeats` written by the long-running services (names defined in `tables`).
DETECTOR_HEARTBEAT = tables.DETECTOR_HEARTBEAT
SPARK_HEARTBEAT = tables.SPARK_HEARTBEAT
NARRATOR_HEARTBEAT = tables.NARRATOR_HEARTBEAT
INGEST_HEARTBEAT = tables.INGEST_HEARTBEAT
INDEXER_HEARTBEAT = tables.INDEXER_HEARTBEAT


@dataclass(frozen=True)
class CheckResult:
    component: str
    status: str  # healthy | degraded | unhealthy
    detail: str
    latency_ms: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def grade_age(age_seconds: float | None, max_age_seconds: float) -> str:
    """Freshness -> status: healthy <= max, degraded <= UNHEALTHY_FACTOR x max, else unhealthy."""
    if age_seconds is None:
        return UNHEALTHY
    if age_seconds <= max_age_seconds:
        return HEALTHY
    if age_seconds <= UNHEALTHY_FACTOR * max_age_seconds:
        return DEGRADED
    return UNHEALTHY


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def _fmt_age(age: float | None) -> str:
    return "never" if age is None else f"{age:.0f}s ago"


# -- transport ------------------------------------------------------------------
def check_transport(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """Local log: its directory and topics are readable. Kafka: the broker answers a metadata request."""
    if settings.transport == "kafka":
        return _check_kafka(settings)
    root = settings.log_dir
    if not root.is_dir():
        return CheckResult("transport", UNHEALTHY, f"local log {root} does not exist")
    from observability.transport.local_log import topic_partitions

    try:
        missing = [t for t in settings.topics if topic_partitions(root, t) == 0]
        readable = [t for t in settings.topics if t not in missing and any((root / t).iterdir())]
    except OSError as exc:
        return CheckResult("transport", UNHEALTHY, f"local log {root} unreadable: {exc}")
    if missing:
        return CheckResult("transport", DEGRADED, f"local log {root}: topics missing: {', '.join(missing)}")
    return CheckResult("transport", HEALTHY, f"local log {root}: {len(readable)} topics readable")


def _check_kafka(settings: Settings) -> CheckResult:
    from kafka import KafkaConsumer

    timeout_ms = int(settings.health_http_timeout_seconds * 1000)
    start = time.perf_counter()
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_broker,
            client_id="obs-health",
            request_timeout_ms=max(timeout_ms, 1000) + 1,
            bootstrap_timeout_ms=timeout_ms,
            connections_max_idle_ms=max(timeout_ms, 1000) + 2,
        )
        try:
            topics = consumer.topics()
        finally:
            consumer.close()
    except Exception as exc:  # broker down, DNS, auth: all mean unreachable
        return CheckResult("transport", UNHEALTHY, f"kafka {settings.kafka_broker} unreachable: {exc}", _ms(start))
    missing = [t for t in settings.topics if t not in topics]
    if missing:
        return CheckResult(
            "transport", DEGRADED, f"kafka {settings.kafka_broker}: topics missing: {', '.join(missing)}", _ms(start)
        )
    return CheckResult("transport", HEALTHY, f"kafka {settings.kafka_broker}: {len(topics)} topics", _ms(start))


# -- pipeline freshness ---------------------------------------------------------------
def check_spark_progress(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """Graded by the newest micro-batch; a job that is alive (its own heartbeat is fresh) but
    has had no input is degraded, not unhealthy (the service_metrics check catches the stall)."""
    row = store.fetch_one(f"SELECT max(processed_at), max(batch_id) FROM {tables.STREAM_PROGRESS}")
    newest, batch = row or (None, None)
    age = _age(now, newest)
    status = grade_age(age, settings.health_progress_max_age_seconds)
    detail = "no micro-batch recorded yet" if newest is None else f"last micro-batch {batch} processed {_fmt_age(age)}"
    if status == UNHEALTHY:
        beat = store.fetch_one(f"SELECT last_seen FROM {tables.HEARTBEATS} WHERE component = ?", [SPARK_HEARTBEAT])
        beat_age = _age(now, beat[0] if beat else None)
        if grade_age(beat_age, settings.health_heartbeat_max_age_seconds) == HEALTHY:
            status, detail = DEGRADED, f"{detail}; job alive (heartbeat {_fmt_age(beat_age)}), no new input"
    return CheckResult("spark", status, detail)


def check_metrics_freshness(settings: Settings, store: Store, now: datetime) -> CheckResult:
    row = store.fetch_one(
        f"SELECT max(window_end), count(DISTINCT service) FROM {tables.SERVICE_METRICS} "
        f"WHERE window_start >= (SELECT max(window_start) FROM {tables.SERVICE_METRICS})"
    )
    newest, services = row or (None, 0)
    age = _age(now, newest)
    status = grade_age(age, settings.health_metrics_max_age_seconds)
    detail = (
        "no service_metrics window yet"
        if newest is None
        else f"newest window ended {_fmt_age(age)} ({services} services)"
    )
    return CheckResult("service_metrics", status, detail)


def _heartbeat(component: str, settings: Settings, store: Store, now: datetime) -> CheckResult:
    row = store.fetch_one(f"SELECT last_seen, detail FROM {tables.HEARTBEATS} WHERE component = ?", [component])
    last_seen, hb_detail = row or (None, None)
    age = _age(now, last_seen)
    status = grade_age(age, settings.health_heartbeat_max_age_seconds)
    detail = "no heartbeat yet" if last_seen is None else f"heartbeat {_fmt_age(age)}"
    if hb_detail:
        detail += f" ({hb_detail})"
    return CheckResult(component, status, detail)


def check_detector(settings: Settings, store: Store, now: datetime) -> CheckResult:
    return _heartbeat(DETECTOR_HEARTBEAT, settings, store, now)


def check_narrator(settings: Settings, store: Store, now: datetime) -> CheckResult:
    return _heartbeat(NARRATOR_HEARTBEAT, settings, store, now)


def check_forecaster(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """The forecaster's heartbeat (opt-in: `run_all_checks(include_forecaster=True)`, as `make health` asks)."""
    return _heartbeat(tables.FORECASTER_HEARTBEAT, settings, store, now)


def narration_backlog(store: Store) -> tuple[int, datetime | None]:
    """(incidents awaiting a summary, oldest such change): the narrator's own definition."""
    return summaries.backlog(store)


def check_narration_backlog(settings: Settings, store: Store, now: datetime) -> CheckResult:
    backlog, oldest = narration_backlog(store)
    if backlog == 0:
        return CheckResult("narration_backlog", HEALTHY, "every incident is summarised")
    age = _age(now, oldest)
    status = grade_age(age, settings.health_narration_max_age_seconds)
    return CheckResult("narration_backlog", status, f"{backlog} incidents waiting, oldest change {_fmt_age(age)}")


def check_layer_queue(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """Committed micro-batches whose silver, gold and error_messages are still to be written
    (`spark.layer_queue`): graded by the oldest one's age; a batch given up on is unhealthy."""
    from observability.layers import LAYER_MAX_ATTEMPTS, layer_backlog

    b = layer_backlog(store)
    if b.failed:
        return CheckResult(
            "layer_queue",
            UNHEALTHY,
            f"{b.failed} batches' layers failed {LAYER_MAX_ATTEMPTS} times, left in {tables.LAYER_QUEUE}: {b.last_error}",
        )
    if b.pending == 0:
        return CheckResult("layer_queue", HEALTHY, "every committed batch has its silver, gold and error messages")
    age = _age(now, b.oldest)
    status = grade_age(age, settings.health_progress_max_age_seconds)
    return CheckResult("layer_queue", status, f"{b.pending} batches' layers to write, oldest commit {_fmt_age(age)}")


# -- HTTP endpoints --------------------------------------------------------------------
def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def _http_check(
    component: str, url: str, settings: Settings, accept: Callable[[httpx.Response], str | None]
) -> CheckResult:
    """GET url; `accept(response)` returns a detail for a healthy answer or None."""
    start = time.perf_counter()
    try:
        resp = httpx.get(url, timeout=settings.health_http_timeout_seconds)
    except httpx.HTTPError as exc:
        return CheckResult(component, UNHEALTHY, f"{url} unreachable: {type(exc).__name__}: {exc}", _ms(start))
    latency = _ms(start)
    if resp.status_code != 200:
        return CheckResult(component, UNHEALTHY, f"{url} answered HTTP {resp.status_code}", latency)
    try:
        detail = accept(resp)
    except ValueError:
        detail = None
    if detail is None:
        return CheckResult(component, DEGRADED, f"{url} answered unexpectedly: {resp.text[:120]!r}", latency)
    status = HEALTHY if latency <= settings.health_http_timeout_seconds * 1000 / 2 else DEGRADED
    return CheckResult(component, status, detail, latency)


def check_model_server(settings: Settings, store: Store, now: datetime) -> CheckResult:
    url = settings.ollama_url.rstrip("/") + "/api/version"
    return _http_check(
        "model_server",
        url,
        settings,
        lambda r: f"version {r.json()['version']} at {settings.ollama_url}" if "version" in r.json() else None,
    )


def check_dashboard(settings: Settings, store: Store, now: datetime) -> CheckResult:
    url = f"http://{settings.dashboard_host}:{settings.dashboard_port}/_stcore/health"
    return _http_check(
        "dashboard", url, settings, lambda r: f"{url}: {r.text.strip()}" if r.text.strip() == "ok" else None
    )


def check_airflow(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """The Airflow API server, scheduler and dag-processor, from its own health endpoint."""
    url = f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health"

    def accept(resp: httpx.Response) -> str | None:
        body = resp.json()
        parts = {k: (body.get(k) or {}).get("status") for k in ("metadatabase", "scheduler", "dag_processor")}
        bad = [k for k, v in parts.items() if v != "healthy"]
        return None if bad else "metadatabase, scheduler, dag_processor healthy"

    return _http_check("airflow", url, settings, accept)


def ingest_health_url(settings: Settings) -> str:
    host = settings.otlp_host if settings.otlp_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.otlp_http_port}/health"


def check_ingest(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """The OTLP receiver: its GET /health (200 while it can publish) and its heartbeat."""
    url = ingest_health_url(settings)
    result = _http_check("ingest", url, settings, lambda r: f"{url}: {r.json().get('records', 0)} records published")
    if result.status != HEALTHY:
        return result
    beat = _heartbeat(INGEST_HEARTBEAT, settings, store, now)
    if beat.status != HEALTHY:
        return CheckResult("ingest", DEGRADED, f"{result.detail}; {beat.detail}", result.latency_ms)
    return result


def check_indexer(settings: Settings, store: Store, now: datetime) -> CheckResult:
    """The search indexer (`python -m llm.indexer`): its heartbeat."""
    return _heartbeat(INDEXER_HEARTBEAT, settings, store, now)


CHECKS: tuple[Callable[[Settings, Store, datetime], CheckResult], ...] = (
    check_transport,
    check_spark_progress,
    check_metrics_freshness,
    check_detector,
    check_narrator,
    check_narration_backlog,
    check_layer_queue,
    check_model_server,
    check_dashboard,
)


def run_all_checks(
    settings: Settings | None = None,
    store: Store | None = None,
    *,
    now: datetime | None = None,
    include_airflow: bool = False,
    include_ingest: bool = False,
    include_forecaster: bool = False,
    include_indexer: bool = False,
) -> list[CheckResult]:
    """Every component check; an error inside a check becomes an unhealthy result."""
    settings = settings or get_settings()
    store = store or Store.from_settings(settings, max_wait_seconds=20)
    now = now or utcnow()
    checks = CHECKS + ((check_airflow,) if include_airflow else ()) + ((check_ingest,) if include_ingest else ())
    checks += (check_forecaster,) if include_forecaster else ()
    checks += (check_indexer,) if include_indexer else ()
    results = []
    for check in checks:
        start = time.perf_counter()
        try:
            results.append(check(settings, store, now))
        except Exception as exc:
            name = check.__name__.removeprefix("check_")
            log.warning("health check raised", check=name, error=str(exc))
            results.append(CheckResult(name, UNHEALTHY, f"check failed: {type(exc).__name__}: {exc}", _ms(start)))
    return results


def record(results: list[CheckResult], store: Store, checked_at: datetime | None = None) -> int:
    """Append one `health_checks` row per result (all with the same checked_at)."""
    checked_at = checked_at or utcnow()
    store.executemany(
        f"INSERT INTO {tables.HEALTH_CHECKS} (checked_at, component, status, detail, latency_ms) VALUES (?, ?, ?, ?, ?)",
        [[checked_at, r.component, r.status, r.detail, r.latency_ms] for r in results],
    )
    return len(results)


def unhealthy(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.status == UNHEALTHY]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="component health checks")
    p.add_argument("--record", action="store_true", help="also append the results to health_checks")
    p.add_argument("--airflow", action="store_true", help="also check the Airflow API server")
    args = p.parse_args(argv)
    settings = get_settings()
    store = Store.from_settings(settings, max_wait_seconds=20)
    results = run_all_checks(settings, store, include_airflow=args.airflow)
    for r in results:
        lat = f" ({r.latency_ms:.0f} ms)" if r.latency_ms is not None else ""
        print(f"{r.status:9s} {r.component:18s} {r.detail}{lat}")
    if args.record:
        store.migrate()
        record(results, store)
    return 1 if unhealthy(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
