"""Every dashboard query, as plain functions of (Store, range, now) -> DataFrame.

A range is a relative preset (`TimeRange`, up to now) or a resolved `Window`
(any start and end, e.g. a day of replayed history); `ranges.bounds` gives
both as (start, end).

No Streamlit here, so the benchmark and tests call them directly. Reads go
through `Store.fetch_df` (short read-only connections). Aggregation and
downsampling happen in DuckDB; only chart-sized frames reach Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from dashboard.ranges import TimeRange, Window, bounds
from dashboard.status import as_list
from observability import bronze, error_logs, similar, tables
from observability.store import Store

# Anomalies this recent mark a service "degraded" on the overview.
STATUS_LOOKBACK = timedelta(minutes=15)
# The "now" figures on a status tile: the last few closed windows.
TILE_WINDOW = timedelta(minutes=5)
# Upper bound on anomaly rows a page loads (newest first).
MAX_ANOMALY_ROWS = 20_000

# A query source: the Store (one short read-only connection per query), or an
# open connection from `store.read` so a page's queries share one connection.
Source = Store | duckdb.DuckDBPyConnection


def _df(src: Source, sql: str, params: list | None = None) -> pd.DataFrame:
    if isinstance(src, Store):
        return src.fetch_df(sql, params)
    return src.execute(sql, params).df()


@dataclass
class Overview:
    """Everything the overview page draws, read on one connection."""

    series: pd.DataFrame
    snapshot: pd.DataFrame
    incidents: pd.DataFrame
    recent_anomalies: pd.DataFrame


def overview(store: Store, tr: TimeRange | Window, now: datetime) -> Overview:
    """The overview's four queries on one short read-only connection (opening
    the file costs more than each of these queries). Status colours are as of
    the range's end (now for a live range)."""
    _, end = bounds(tr, now)
    return store.read(
        lambda con: Overview(
            series=service_series(con, tr, now),
            snapshot=service_snapshot(con, tr, now),
            incidents=incidents(con, tr, now),
            recent_anomalies=recent_anomaly_counts(con, min(end, now)),
        )
    )


def service_series(src: Source, tr: TimeRange | Window, now: datetime) -> pd.DataFrame:
    """Per service and time bucket: request rate, error rate, p50/p95/p99.

    Rate is requests per second over the windows present in the bucket.
    Percentiles of a multi-window bucket are the request-weighted mean of the
    per-window percentiles (an approximation; exact at 1-minute buckets).
    """
    bucket = int(tr.bucket_minutes)
    lat = {
        p: f"sum({p}_latency_ms * request_count) / nullif(sum(CASE WHEN {p}_latency_ms IS NOT NULL THEN request_count END), 0)"
        for p in ("p50", "p95", "p99")
    }
    sql = f"""
        SELECT time_bucket(INTERVAL {bucket} MINUTE, window_start) AS bucket,
               service,
               sum(request_count) / (count(*) * 60.0) AS request_rate,
               sum(error_count) / nullif(sum(request_count), 0) AS error_rate,
               {lat["p50"]} AS p50_latency_ms,
               {lat["p95"]} AS p95_latency_ms,
               {lat["p99"]} AS p99_latency_ms
        FROM {tables.SERVICE_METRICS}
        WHERE window_start >= ? AND window_start < ?
        GROUP BY ALL
        ORDER BY service, bucket
    """
    return _df(src, sql, list(bounds(tr, now)))


def service_snapshot(src: Source, tr: TimeRange | Window, now: datetime) -> pd.DataFrame:
    """One row per service seen in the range: last window and its recent figures."""
    sql = f"""
        WITH seen AS (
            SELECT service, max(window_start) AS last_window
            FROM {tables.SERVICE_METRICS}
            WHERE window_start >= ? AND window_start < ?
            GROUP BY service
        ), recent AS (
            SELECT m.service,
                   sum(m.request_count) / (count(*) * 60.0) AS request_rate,
                   sum(m.error_count) / nullif(sum(m.request_count), 0) AS error_rate,
                   max(m.p95_latency_ms) AS p95_latency_ms
            FROM {tables.SERVICE_METRICS} m JOIN seen s USING (service)
            WHERE m.window_start > s.last_window - ?
            GROUP BY m.service
        )
        SELECT seen.service, seen.last_window, recent.request_rate, recent.error_rate, recent.p95_latency_ms
        FROM seen LEFT JOIN recent USING (service)
        ORDER BY seen.service
    """
    return _df(src, sql, [*bounds(tr, now), TILE_WINDOW])


def recent_anomaly_counts(src: Source, now: datetime, lookback: timedelta = STATUS_LOOKBACK) -> pd.DataFrame:
    """Anomalies per service in the few minutes up to `now` (drives "degraded")."""
    sql = f"""
        SELECT service, count(*) AS anomalies, max(score) AS max_score, max(window_start) AS last_anomaly
        FROM {tables.ANOMALIES}
        WHERE window_start >= ? AND window_start <= ?
        GROUP BY service
    """
    return _df(src, sql, [now - lookback, now])


def incidents(src: Source, tr: TimeRange | Window, now: datetime) -> pd.DataFrame:
    """Incidents overlapping the range (and every open one), newest first,
    each with its latest summary (NULL columns when none is written yet)."""
    sql = f"""
        WITH latest_summary AS (
            SELECT incident_id, summary, generated_by, model, created_at AS summary_created_at,
                   latency_ms AS summary_latency_ms, facts
            FROM {tables.INCIDENT_SUMMARIES}
            QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY created_at DESC) = 1
        )
        SELECT i.id, i.service, i.started_at, i.ended_at, i.status, i.peak_severity,
               i.root_cause_service, i.related_services, i.root_cause_candidates, i.updated_at,
               s.summary, s.generated_by, s.model, s.summary_created_at, s.summary_latency_ms, s.facts
        FROM {tables.INCIDENTS} i LEFT JOIN latest_summary s ON s.incident_id = i.id
        WHERE i.started_at < ? AND (i.status = 'open' OR coalesce(i.ended_at, ?) >= ?)
        ORDER BY i.started_at DESC
    """
    start, end = bounds(tr, now)
    return _df(src, sql, [end, now, start])


SIMILAR_COLUMNS = ["id", "started_at", "service", "anomaly_types", "minutes", "root_cause_service", "shared", "summary"]


def similar_incidents(src: Source, incident_id: str, limit: int = 5) -> pd.DataFrame:
    """The nearest earlier incidents (observability.similar): what they shared, how long they
    lasted (minutes; NULL while open) and their latest summary."""

    def work(con) -> list:
        return similar.similar_incidents(con, incident_id, limit=limit)

    found = src.read(work) if isinstance(src, Store) else work(src)
    rows = [
        {
            "id": s.id,
            "started_at": s.started_at,
            "service": s.service,
            "anomaly_types": ", ".join(s.anomaly_types),
            "minutes": s.minutes,
            "root_cause_service": s.root_cause_service,
            "shared": ", ".join(s.shared),
            "summary": s.summary,
        }
        for s in found
    ]
    return pd.DataFrame(rows, columns=SIMILAR_COLUMNS)


def anomalies(src: Source, tr: TimeRange | Window, now: datetime) -> pd.DataFrame:
    sql = f"""
        SELECT id, service, window_start, window_end, detected_at, anomaly_type, severity, score,
               detectors, baseline, observed, sample_trace_ids
        FROM {tables.ANOMALIES}
        WHERE window_start >= ? AND window_start < ?
        ORDER BY window_start DESC
        LIMIT {MAX_ANOMALY_ROWS}
    """
    return _df(src, sql, list(bounds(tr, now)))


def incident_anomalies(
    src: Source, service: str, started_at: datetime, ended_at: datetime | None, now: datetime
) -> pd.DataFrame:
    """The anomalies an incident grouped: same service, inside its span."""
    sql = f"""
        SELECT id, service, window_start, anomaly_type, severity, score, detectors, baseline, observed,
               sample_trace_ids
        FROM {tables.ANOMALIES}
        WHERE service = ? AND window_start >= ? AND window_start <= ?
        ORDER BY window_start
    """
    return _df(src, sql, [service, started_at, ended_at or now])


@dataclass
class IncidentDetail:
    """What the incidents page shows of the chosen incident, read on one connection."""

    similar: pd.DataFrame
    anomalies: pd.DataFrame
    trace_samples: pd.DataFrame
    error_logs: pd.DataFrame


# an incident's trace samples and error logs start this long before it (and the logs end this long after)
INCIDENT_MARGIN = timedelta(minutes=1)


def incident_detail(
    store: Store,
    incident_id: str,
    service: str,
    services: list[str],
    started_at: datetime,
    ended_at: datetime | None,
    now: datetime,
) -> IncidentDetail:
    """The chosen incident's similar incidents, its anomalies, the trace samples of its
    services and the error logs of its services and sample traces, on one short read-only
    connection (four opens were most of the page's query time)."""
    start = pd.Timestamp(started_at).to_pydatetime()
    end = pd.Timestamp(ended_at or now).to_pydatetime()

    def work(con) -> IncidentDetail:
        anomalies = incident_anomalies(con, service, started_at, ended_at, now)
        samples = trace_samples(con, services, start - INCIDENT_MARGIN, end)
        trace_ids = {t for cell in anomalies["sample_trace_ids"] for t in as_list(cell)} | set(samples["trace_id"])
        logs = incident_error_logs(con, services, start - INCIDENT_MARGIN, end + INCIDENT_MARGIN, sorted(trace_ids))
        return IncidentDetail(similar_incidents(con, incident_id), anomalies, samples, logs)

    return store.read(work)


def trace_samples(src: Source, services: list[str], start: datetime, end: datetime) -> pd.DataFrame:
    """Sampled trace ids of some services in a time span (error and slow first)."""
    if not services:
        return pd.DataFrame(columns=["window_start", "service", "trace_id", "reason"])
    sql = f"""
        SELECT window_start, service, trace_id, reason
        FROM {tables.TRACE_SAMPLES}
        WHERE list_contains(?, service) AND window_start >= ? AND window_start <= ?
        ORDER BY CASE reason WHEN 'error' THEN 0 WHEN 'slow' THEN 1 ELSE 2 END, window_start
        LIMIT 200
    """
    return _df(src, sql, [services, start, end])


def incident_error_logs(
    src: Source, services: list[str], start: datetime, end: datetime, trace_ids: list[str]
) -> pd.DataFrame:
    """Error logs of an incident's services in its span, and of its sample traces (newest first)."""
    return error_logs.incident_error_logs(src, services, start, end, trace_ids)


def trace_spans(bronze_dir: Path, trace_id: str, around: datetime, slack: timedelta) -> pd.DataFrame:
    """All spans of one trace from the bronze Parquet layer."""
    return bronze.read_trace(Path(bronze_dir), trace_id, around=around, slack=slack)


# What each page's "newest data" hint reads: (table, time column).
NEWEST_DATA = {
    "metrics": (tables.SERVICE_METRICS, "window_start"),
    "anomalies": (tables.ANOMALIES, "window_start"),
    "incidents": (tables.INCIDENTS, "started_at"),
    "dead_letters": (tables.DEAD_LETTER, "received_at"),
}


def newest_data(src: Source, what: str) -> datetime | None:
    """When the newest row of a page's data is (so an empty range can offer to jump there)."""
    table, column = NEWEST_DATA[what]
    df = _df(src, f"SELECT max({column}) AS newest FROM {table}")
    value = None if df.empty else df.iloc[0]["newest"]
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def pipeline_progress(src: Source) -> pd.DataFrame:
    """Newest event time the stream has seen, and its last batch (one row)."""
    sql = f"""
        SELECT max(max_event_time) AS max_event_time, max(watermark) AS watermark,
               max(processed_at) AS last_batch_at, max(batch_id) AS last_batch_id,
               count(*) AS batches
        FROM {tables.STREAM_PROGRESS}
    """
    return _df(src, sql)


def latest_health_checks(src: Source) -> pd.DataFrame:
    sql = f"""
        SELECT component, status, checked_at, detail, latency_ms
        FROM {tables.HEALTH_CHECKS}
        QUALIFY row_number() OVER (PARTITION BY component ORDER BY checked_at DESC) = 1
        ORDER BY CASE status WHEN 'unhealthy' THEN 0 WHEN 'degraded' THEN 1 ELSE 2 END, component
    """
    return _df(src, sql)


def heartbeats(src: Source) -> pd.DataFrame:
    return _df(src, f"SELECT component, last_seen, detail FROM {tables.HEARTBEATS} ORDER BY component")


def dead_letter_by_reason(src: Source, tr: TimeRange | Window, now: datetime) -> pd.DataFrame:
    sql = f"""
        SELECT reason, count(*) AS records, max(received_at) AS last_received
        FROM {tables.DEAD_LETTER}
        WHERE received_at >= ? AND received_at < ?
        GROUP BY reason
        ORDER BY records DESC, reason
    """
    return _df(src, sql, list(bounds(tr, now)))


def alert_channels(src: Source, tr: TimeRange | Window, now: datetime) -> pd.DataFrame:
    """Per notification channel in the range: attempts by outcome, the last attempt and last failure."""
    sql = f"""
        SELECT channel,
               count(*) FILTER (WHERE outcome = 'sent') AS sent,
               count(*) FILTER (WHERE outcome = 'failed') AS failed,
               count(*) FILTER (WHERE outcome = 'gave_up') AS gave_up,
               max(attempted_at) AS last_attempt,
               arg_max(error, attempted_at) FILTER (WHERE outcome <> 'sent') AS last_error
        FROM {tables.ALERT_DELIVERIES}
        WHERE attempted_at >= ? AND attempted_at < ?
        GROUP BY channel
        ORDER BY channel
    """
    return _df(src, sql, list(bounds(tr, now)))


def alert_failures(src: Source, tr: TimeRange | Window, now: datetime, limit: int = 20) -> pd.DataFrame:
    """The newest failed or abandoned notification attempts in the range."""
    sql = f"""
        SELECT d.attempted_at, d.channel, e.event, e.incident_id, d.attempt, d.outcome, d.status_code, d.error
        FROM {tables.ALERT_DELIVERIES} d LEFT JOIN {tables.ALERT_EVENTS} e ON e.id = d.event_id
        WHERE d.outcome <> 'sent' AND d.attempted_at >= ? AND d.attempted_at < ?
        ORDER BY d.attempted_at DESC
        LIMIT ?
    """
    return _df(src, sql, [*bounds(tr, now), limit])


@dataclass
class HealthPage:
    """Everything the health page draws, read on one connection."""

    progress: pd.DataFrame
    checks: pd.DataFrame
    heartbeats: pd.DataFrame
    dead_letters: pd.DataFrame
    alert_channels: pd.DataFrame
    alert_failures: pd.DataFrame
    models: pd.DataFrame


def health_page(store: Store, tr: TimeRange | Window, now: datetime) -> HealthPage:
    """The health page's seven queries on one short read-only connection: opening the
    file (~17 CPU-ms) costs more than any of them, and seven opens were most of the page's time."""
    return store.read(
        lambda con: HealthPage(
            progress=pipeline_progress(con),
            checks=latest_health_checks(con),
            heartbeats=heartbeats(con),
            dead_letters=dead_letter_by_reason(con, tr, now),
            alert_channels=alert_channels(con, tr, now),
            alert_failures=alert_failures(con, tr, now),
            models=model_registry(con),
        )
    )


def model_registry(src: Source) -> pd.DataFrame:
    sql = f"""
        SELECT version, model, trained_at, promoted, metrics
        FROM {tables.MODEL_REGISTRY}
        ORDER BY trained_at DESC
        LIMIT 100
    """
    return _df(src, sql)
