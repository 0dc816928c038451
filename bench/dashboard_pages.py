"""What `bench_dashboard.py` needs beyond the overview's metrics: a week of data for every
other page, each page's URL and "rendered" check, and each page's queries as plain calls.

The seeded week (10 services, beside the 100,800 `service_metrics` rows): incidents with
anomalies, summaries, sample traces and their bronze spans, scattered anomalies, a
trace index, the call graph per minute, health checks every 5 minutes, stream batches
every 30 s, dead letters, OTLP logs, alert deliveries, the model registry and SLA risk.
`page_queries` runs what each page runs on a cache miss (the `dashboard.queries` /
`trace_queries` functions the cached loaders in `dashboard/data.py` call), so the bench
times them cold, without Streamlit's cache.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard import queries, sql_console, trace_queries
from dashboard.ranges import resolve
from dashboard.trace_queries import TraceSearch
from observability import bronze, forecasts, tables
from observability.store import Store, utcnow
from tests.seeding import seed_incident

TRACES = 20_000  # trace_index rows over the week
SCATTERED_ANOMALIES = 400
# caller -> callee edges of the call graph (index pairs into the services)
EDGES = [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (3, 6), (4, 6), (5, 7), (6, 8), (7, 8), (8, 9), (2, 9)]


@dataclass(frozen=True)
class Page:
    """One page of the st.navigation app as the browser sees it."""

    name: str
    path: str  # URL path and query, after the host
    ready: str  # CSS selector of the element whose visibility means "rendered"
    count: int = 1  # how many of `ready` must be visible
    text: str | None = None  # a text that must be on the page once it is rendered


@dataclass(frozen=True)
class Seeded:
    now: datetime
    open_incident: str
    trace_id: str  # a trace with spans in bronze (the incident's sample, the trace page)


def pages(seeded: Seeded) -> list[Page]:
    """Every page of dashboard/app.py's navigation, on the seeded week."""
    week = "range=7d"
    plot = ".js-plotly-plot"
    return [
        # the five uPlot panels (dashboard/time_series.py; inside the component's shadow root)
        Page("overview", f"?{week}", ".uplot", 5, "Last 7 days, 30-minute buckets"),
        Page("anomalies", f"anomalies?{week}", plot, 1),
        Page("incidents", f"incidents?{week}", plot, 2, "Error logs"),
        Page("traces (search)", f"traces?{week}", "[data-testid=stDataFrame]", 1),
        Page("trace (one)", f"traces?trace_id={seeded.trace_id}", plot, 1, "Logs of this trace"),
        Page("service map", f"service-map?{week}", "[data-testid=stGraphVizChart] svg", 1),
        Page("health", f"health?{week}", plot, 1, "Model registry"),
        # the editor's "Save or delete a query" expander and one per documented table
        Page("sql", "sql", "[data-testid=stExpander]", 1 + sql_console.table_docs()["table"].nunique()),
        Page("search", "search", "[data-testid=stTextInput]", 1, "Type a question in your own words"),
    ]


# --- seeding ---------------------------------------------------------------------------
def seed_pages(store: Store, bronze_dir: Path, services: list[str], now: datetime, days: int) -> Seeded:
    rng = np.random.default_rng(11)
    start = now - timedelta(days=days)
    trace_ids = [uuid.uuid4().hex for _ in range(3)]
    open_id = _seed_incidents(store, services, now, days, trace_ids)
    _seed_anomalies(store, rng, services, start, now)
    _seed_traces(store, bronze_dir, rng, services, start, now, trace_ids)
    _seed_dependencies(store, rng, services, start, now)
    _seed_health(store, rng, start, now)
    _seed_logs(store, rng, services, start, now, trace_ids[0])
    _seed_alerts(store, open_id, now)
    _seed_sla_risk(store, services, now)
    return Seeded(now=now, open_incident=open_id, trace_id=trace_ids[0])


def _seed_incidents(store: Store, services: list[str], now: datetime, days: int, trace_ids: list[str]) -> str:
    """One resolved incident a day and one open now, each with its anomalies and a summary."""
    for k in range(days - 1):
        inc = seed_incident(
            store,
            services[k % len(services)],
            now - timedelta(days=k + 1, hours=3),
            minutes=40,
            severity="high",
            anomaly_type="latency_spike",
            related=[services[(k + 1) % len(services)]],
        )
        _summary(store, inc, services[k % len(services)], "llm")
    open_id = seed_incident(
        store,
        services[5],
        now - timedelta(minutes=20),
        minutes=18,
        severity="critical",
        related=[services[2], services[7]],
        root_cause=services[8],
        status="open",
        trace_ids=trace_ids,
    )
    _summary(store, open_id, services[5], "template")
    return open_id


def _summary(store: Store, incident_id: str, service: str, by: str) -> None:
    text = f"Error rate of {service} rose from 1.0% to 30.0%; likely root cause downstream; no action taken yet."
    facts = {"service": service, "error_rate": {"baseline": 0.01, "observed": 0.3}}
    row = dict(
        id=str(uuid.uuid4()),
        incident_id=incident_id,
        service=service,
        created_at=pd.Timestamp.now("UTC").tz_localize(None),
        summary=text,
        generated_by=by,
        model="qwen2.5-coder:0.5b" if by == "llm" else None,
        latency_ms=1200.0,
        prompt_tokens=400,
        completion_tokens=80,
        facts=json.dumps(facts),
    )
    store.insert_df(tables.INCIDENT_SUMMARIES, pd.DataFrame([row]))


def _seed_anomalies(store: Store, rng, services: list[str], start: datetime, now: datetime) -> None:
    n = SCATTERED_ANOMALIES
    offsets = rng.uniform(0, (now - start).total_seconds() - 60, n)
    ws = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    ws = ws.floor("min")
    df = pd.DataFrame(
        dict(
            id=[str(uuid.uuid4()) for _ in range(n)],
            service=rng.choice(services, n),
            window_start=ws,
            window_end=ws + pd.Timedelta(minutes=1),
            detected_at=ws + pd.Timedelta(minutes=1, seconds=20),
            anomaly_type=rng.choice(["latency_spike", "error_surge", "traffic_drop"], n),
            severity=rng.choice(["low", "medium", "high", "critical"], n, p=[0.5, 0.3, 0.15, 0.05]),
            score=rng.uniform(0.3, 1.0, n),
            detectors=json.dumps({"rules": 0.7, "robust_stats": 0.6}),
            baseline=json.dumps({"p95_latency_ms": 80.0}),
            observed=json.dumps({"p95_latency_ms": 200.0}),
            sample_trace_ids=[[] for _ in range(n)],
        )
    )
    store.insert_df(tables.ANOMALIES, df)


def _seed_traces(store, bronze_dir, rng, services, start, now, sample_ids: list[str]) -> None:
    """A week of `trace_index` rows; bronze spans for the open incident's sample traces."""
    n = TRACES
    starts = pd.to_datetime(start) + pd.to_timedelta(rng.uniform(0, (now - start).total_seconds() - 5, n), unit="s")
    starts = starts.sort_values()
    root = rng.integers(0, 3, n)
    duration = rng.gamma(2.0, 60.0, n)
    ids = [uuid.uuid4().hex for _ in range(n - len(sample_ids))] + sample_ids
    starts = starts.tolist()
    for i in range(len(sample_ids)):  # the samples are recent, inside the open incident
        starts[n - len(sample_ids) + i] = pd.Timestamp(now) - pd.Timedelta(minutes=10 - i)
    errors = rng.binomial(1, 0.03, n)
    errors[-len(sample_ids) :] = 1
    df = pd.DataFrame(
        dict(
            trace_id=ids,
            start_time=starts,
            end_time=[s + pd.Timedelta(milliseconds=float(d)) for s, d in zip(starts, duration, strict=True)],
            root_service=[services[r] for r in root],
            root_endpoint=[f"/api/{services[r]}/handle" for r in root],
            root_span_id=[uuid.uuid4().hex[:16] for _ in range(n)],
            duration_ms=duration,
            span_count=4,
            error_count=errors,
            services=[sorted({services[r], services[r + 3], services[6], services[8]}) for r in root],
            updated_at=starts,
            trace_key=[tables.trace_key(t) for t in ids],
        )
    )
    store.insert_df(tables.TRACE_INDEX, df)
    spans = []
    for i, trace_id in enumerate(sample_ids):
        t0 = starts[n - len(sample_ids) + i]
        chain = [
            ("a", None, services[5], "/api/pay", 0, 420.0, 500, "upstream failed"),
            ("b", "a", services[8], "SELECT orders", 15, 380.0, 500, "lock wait timeout"),
            ("c", "a", services[2], "/api/reserve", 5, 8.0, 200, None),
            ("d", "b", services[9], "/api/ledger", 20, 30.0, 200, None),
        ]
        for sid, parent, svc, ep, off, lat, code, err in chain:
            spans.append(
                dict(
                    event_id=uuid.uuid4().hex,
                    timestamp=t0 + pd.Timedelta(milliseconds=off),
                    service=svc,
                    endpoint=ep,
                    status_code=code,
                    latency_ms=lat,
                    trace_id=trace_id,
                    span_id=sid * 16,
                    parent_span_id=parent * 16 if parent else None,
                    error_message=err,
                    attributes=json.dumps({"region": "eu"}),
                )
            )
    bronze.write_events(bronze_dir, pd.DataFrame(spans))


def _seed_dependencies(store, rng, services, start, now) -> None:
    minutes = pd.date_range(start=pd.Timestamp(start).ceil("min"), end=now - timedelta(minutes=1), freq="1min")
    frames = [
        pd.DataFrame(
            dict(
                window_start=minutes,
                parent_service=services[a],
                child_service=services[b],
                call_count=rng.poisson(200, len(minutes)),
                error_count=rng.poisson(2, len(minutes)),
            )
        )
        for a, b in EDGES
    ]
    store.insert_df(tables.SERVICE_DEPENDENCIES, pd.concat(frames, ignore_index=True))


def _seed_health(store, rng, start, now) -> None:
    """Health checks every 5 minutes per component, stream batches every 30 s, dead letters, models."""
    checks = pd.date_range(start=start, end=now, freq="5min")
    components = ["transport", "spark", "duckdb", "detector", "narrator", "model_server", "dashboard"]
    store.insert_df(
        tables.HEALTH_CHECKS,
        pd.concat(
            [
                pd.DataFrame(
                    dict(checked_at=checks, component=c, status="healthy", detail="ok", latency_ms=rng.uniform(1, 9))
                )
                for c in components
            ],
            ignore_index=True,
        ),
    )
    batches = pd.date_range(start=start, end=now, freq="30s")
    store.insert_df(
        tables.STREAM_PROGRESS,
        pd.DataFrame(
            dict(
                batch_id=np.arange(len(batches)),
                processed_at=batches,
                rows_in=1000,
                rows_rejected=1,
                rows_late=0,
                max_event_time=batches - pd.Timedelta(seconds=20),
                watermark=batches - pd.Timedelta(minutes=2),
            )
        ),
    )
    received = pd.to_datetime(start) + pd.to_timedelta(rng.uniform(0, (now - start).total_seconds(), 300), unit="s")
    store.insert_df(
        tables.DEAD_LETTER,
        pd.DataFrame(
            dict(
                received_at=received,
                source="spark:raw_events",
                reason=rng.choice(["missing field: service", "invalid JSON", "bad timestamp"], 300),
                payload="{}",
            )
        ),
    )
    store.insert_df(
        tables.MODEL_REGISTRY,
        pd.DataFrame(
            [
                dict(
                    version=f"if-{k:04d}",
                    trained_at=now - timedelta(days=k),
                    model="isolation_forest",
                    metrics=json.dumps({"f1": 0.8}),
                    promoted=k == 0,
                )
                for k in range(7)
            ]
        ),
    )
    for c in ("detector", "narrator", "notifier", "forecaster"):
        store.heartbeat(c, "ok")


def _seed_logs(store, rng, services, start, now, trace_id: str) -> None:
    n = 5_000
    ts = pd.to_datetime(start) + pd.to_timedelta(rng.uniform(0, (now - start).total_seconds(), n), unit="s")
    error = rng.binomial(1, 0.1, n).astype(bool)
    df = pd.DataFrame(
        dict(
            timestamp=ts,
            service=rng.choice(services, n),
            severity_text=np.where(error, "ERROR", "INFO"),
            severity_number=np.where(error, 17, 9),
            body=np.where(error, "upstream timeout", "request served"),
            trace_id=None,
            span_id=None,
            attributes=None,
        )
    )
    df.loc[df.index[:5], ["timestamp", "trace_id"]] = [now - timedelta(minutes=9), trace_id]
    store.insert_df(tables.LOGS, df)


def _seed_alerts(store, incident_id: str, now) -> None:
    event = f"{incident_id}|opened"
    store.execute(
        f"""INSERT INTO {tables.ALERT_EVENTS} (id, seq, incident_id, event, severity, channels, payload, created_at)
            VALUES (?, 1, ?, 'opened', 'critical', ['webhook:hooks#1'], '{{}}', ?)""",
        [event, incident_id, now - timedelta(minutes=19)],
    )
    store.executemany(
        f"""INSERT INTO {tables.ALERT_DELIVERIES} (event_id, channel, attempt, attempted_at, outcome, status_code,
            error, duration_ms) VALUES (?, 'webhook:hooks#1', ?, ?, ?, ?, ?, 12.0)""",
        [
            [event, 1, now - timedelta(minutes=19), "failed", 503, "HTTP 503"],
            [event, 2, now - timedelta(minutes=18), "sent", 200, None],
        ],
    )


def _seed_sla_risk(store, services, now) -> None:
    store.insert_df(
        tables.SLA_RISK,
        pd.DataFrame(
            [
                dict(
                    service=s,
                    metric="p99_latency_ms",
                    sla=500.0,
                    sla_source="learned",
                    probability=0.6 if i == 5 else 0.05,
                    crossing_time=now + timedelta(minutes=25) if i == 5 else None,
                    predicted_peak=520.0 if i == 5 else 200.0,
                    at_risk=i == 5,
                    made_at=now - timedelta(minutes=2),
                )
                for i, s in enumerate(services)
            ]
        ),
    )


# --- each page's queries, as the page runs them on a cache miss -------------------------
def page_queries(store: Store, bronze_dir: Path, data_dir: Path, seeded: Seeded) -> dict[str, Callable[[], object]]:
    """Page name -> one call running every query the page runs on its first render."""

    def window():
        now = utcnow()
        return resolve("now-7d", "now", now), now

    def overview():
        win, now = window()
        return queries.overview(store, win, now), forecasts.sla_risk(store)

    def anomalies():
        win, now = window()
        return queries.anomalies(store, win, now)

    def incidents():
        win, now = window()
        found = queries.incidents(store, win, now)
        inc = found.iloc[0]
        ended = None if pd.isna(inc.ended_at) else inc.ended_at
        services = sorted({inc.service, *list(inc.related_services), inc.root_cause_service})
        detail = queries.incident_detail(store, inc.id, inc.service, services, inc.started_at, ended, now)
        trace_id = detail.anomalies.iloc[0].sample_trace_ids[0]
        around = pd.Timestamp(detail.anomalies.iloc[0].window_start).to_pydatetime()
        return found, detail, queries.trace_spans(bronze_dir, trace_id, around, timedelta(minutes=15))

    def traces():
        win, _ = window()
        return (
            trace_queries.trace_services(store, win.start, win.end),
            trace_queries.search_traces(store, bronze_dir, TraceSearch(), win.start, win.end),
        )

    def trace():
        row, logs = store.read(
            lambda con: (trace_queries.trace_row(con, seeded.trace_id), trace_queries.trace_logs(con, seeded.trace_id))
        )
        first = row.iloc[0]
        spans = trace_queries.trace_spans(
            bronze_dir, seeded.trace_id, first.start_time.to_pydatetime(), first.end_time.to_pydatetime()
        )
        return row, spans, logs

    def service_map():
        win, _ = window()
        return store.read(
            lambda con: (
                trace_queries.service_edges(con, win.start, win.end),
                trace_queries.service_health(con, win.start, win.end),
            )
        )

    def health():
        win, now = window()
        return queries.health_page(store, win, now)

    def sql():
        return sql_console.table_docs(), sql_console.table_writers(), sql_console.load_saved(data_dir)

    def search():
        from dashboard import search_box  # the page's own query (its store is a cached resource)

        return search_box.services()

    return {
        "overview": overview,
        "anomalies": anomalies,
        "incidents": incidents,
        "traces (search)": traces,
        "trace (one)": trace,
        "service map": service_map,
        "health": health,
        "sql": sql,
        "search": search,
    }
