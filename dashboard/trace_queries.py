"""Queries of the traces page and the service map: plain functions of (Store, filters, time span).

No Streamlit here (the bench and the tests call them directly). Trace search reads the
`trace_index` table (one row per trace, written by the Spark job), so a week of traces
is searched without touching the spans; only an attribute filter reads bronze spans,
and only in the hour partitions of the span searched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from observability import bronze, tables
from observability.store import Store

MAX_RESULTS = 200  # trace rows a search returns (newest first)
MAX_ATTRIBUTE_TRACES = 5_000  # trace ids an attribute filter passes on to the index search
TRACE_SLACK = timedelta(minutes=2)  # read the trace's spans this far either side of its index row
RESULT_COLUMNS = [
    "trace_id",
    "start_time",
    "root_service",
    "root_endpoint",
    "duration_ms",
    "span_count",
    "error_count",
    "services",
]

Source = Store | duckdb.DuckDBPyConnection


def _df(src: Source, sql: str, params: list | None = None) -> pd.DataFrame:
    if isinstance(src, Store):
        return src.fetch_df(sql, params)
    return src.execute(sql, params).df()


@dataclass(frozen=True)
class TraceSearch:
    """A trace search; empty fields match everything. Hashable, so loaders can cache on it."""

    service: str = ""  # any span of the trace
    endpoint: str = ""  # the root span's endpoint, substring, case-insensitive
    errors_only: bool = False
    min_duration_ms: float = 0.0
    trace_id: str = ""
    attribute: str = ""  # key=value on any span (read from bronze)

    def attribute_pair(self) -> tuple[str, str] | None:
        """`key=value` -> (key, value); ValueError for text without '=' or an empty key."""
        text = self.attribute.strip()
        if not text:
            return None
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"attribute filter {text!r}: write it as key=value")
        return key.strip(), value.strip()


def search_sql(search: TraceSearch, start: datetime, end: datetime, trace_ids: list[str] | None = None):
    """The index query and its parameters (also what the bench times)."""
    where = ["start_time >= ?", "start_time < ?"]
    params: list = [start, end]
    if search.trace_id.strip():
        where.append("trace_id = ?")
        params.append(search.trace_id.strip().lower())
    if search.service:
        where.append("list_contains(services, ?)")
        params.append(search.service)
    if search.endpoint.strip():
        where.append("root_endpoint ILIKE ?")
        params.append(f"%{search.endpoint.strip()}%")
    if search.errors_only:
        where.append("error_count > 0")
    if search.min_duration_ms > 0:
        where.append("duration_ms >= ?")
        params.append(float(search.min_duration_ms))
    if trace_ids is not None:
        where.append("list_contains(?, trace_id)")
        params.append(trace_ids)
    sql = f"""
        SELECT {", ".join(RESULT_COLUMNS)} FROM {tables.TRACE_INDEX}
        WHERE {" AND ".join(where)}
        ORDER BY start_time DESC LIMIT {MAX_RESULTS}
    """
    return sql, params


def traces_with_attribute(
    bronze_dir: Path, key: str, value: str, start: datetime, end: datetime, limit: int = MAX_ATTRIBUTE_TRACES
) -> list[str]:
    """The newest `limit` trace ids with a span carrying attribute `key` = `value` (compared as
    text) in [start, end): DuckDB over the hour partitions of the span, ids only."""
    dirs = bronze.partition_dirs(Path(bronze_dir), start, end)
    if not dirs:
        return []
    path = "$." + '"' + key.replace('"', '\\"') + '"'
    con = duckdb.connect(":memory:")
    try:
        rows = con.execute(
            f"""SELECT trace_id FROM read_parquet(?, union_by_name = true)
                WHERE timestamp >= ? AND timestamp < ? AND trace_id IS NOT NULL
                  AND json_extract_string(attributes, ?) = ?
                GROUP BY trace_id ORDER BY max(timestamp) DESC LIMIT {int(limit)}""",
            [[str(d / "*.parquet") for d in dirs], start, end, path, value],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def search_traces(src: Source, bronze_dir: Path, search: TraceSearch, start: datetime, end: datetime) -> pd.DataFrame:
    """Traces matching the search that started in [start, end), newest first."""
    trace_ids = None
    pair = search.attribute_pair()
    if pair is not None:
        trace_ids = traces_with_attribute(bronze_dir, pair[0], pair[1], start, end)
        if not trace_ids:
            return pd.DataFrame(columns=RESULT_COLUMNS)
    sql, params = search_sql(search, start, end, trace_ids)
    return _df(src, sql, params)


def trace_row(src: Source, trace_id: str) -> pd.DataFrame:
    """The trace's index row (empty when the index does not know it), found by its `trace_key`
    (the table has no index on trace_id: `tables.trace_key_sql`)."""
    trace_id = trace_id.strip().lower()
    return _df(
        src,
        f"SELECT * EXCLUDE (trace_key) FROM {tables.TRACE_INDEX} WHERE trace_key = ? AND trace_id = ?",
        [tables.trace_key(trace_id), trace_id],
    )


def trace_spans(bronze_dir: Path, trace_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The trace's spans from bronze, read only in the hours around its index row."""
    return bronze.read_events(
        bronze_dir, start - TRACE_SLACK, end + TRACE_SLACK, "trace_id = ?", [trace_id.strip().lower()]
    )


def trace_logs(src: Source, trace_id: str) -> pd.DataFrame:
    """The trace's OTLP log records, in time order."""
    sql = f"""
        SELECT timestamp, service, severity_text, severity_number, body, span_id, attributes
        FROM {tables.LOGS} WHERE trace_id = ? ORDER BY timestamp LIMIT 1000
    """
    return _df(src, sql, [trace_id.strip().lower()])


def trace_services(src: Source, start: datetime, end: datetime) -> list[str]:
    """Services seen in traces of the span (the search's service choices)."""
    sql = f"""
        SELECT DISTINCT unnest(services) AS service FROM {tables.TRACE_INDEX}
        WHERE start_time >= ? AND start_time < ? ORDER BY 1
    """
    return _df(src, sql, [start, end])["service"].tolist()


# --- the service map ------------------------------------------------------------------
EDGE_COLUMNS = ["parent_service", "child_service", "calls", "errors", "calls_per_min", "error_rate", "callee_p95_ms"]


def service_edges(src: Source, start: datetime, end: datetime) -> pd.DataFrame:
    """Caller -> callee edges of the span, with calls per minute (over the minutes the span
    has any edge), error rate and the callee's request-weighted p95 latency (NULL for a
    callee without metrics, e.g. a database)."""
    sql = f"""
        WITH deps AS (
            SELECT * FROM {tables.SERVICE_DEPENDENCIES} WHERE window_start >= ? AND window_start < ?
        ), minutes AS (
            SELECT greatest(count(DISTINCT window_start), 1) AS n FROM deps
        ), latency AS (
            SELECT service,
                   sum(p95_latency_ms * request_count) / nullif(sum(request_count), 0) AS p95
            FROM {tables.SERVICE_METRICS}
            WHERE window_start >= ? AND window_start < ? AND p95_latency_ms IS NOT NULL
            GROUP BY service
        )
        SELECT d.parent_service, d.child_service, sum(d.call_count) AS calls, sum(d.error_count) AS errors,
               sum(d.call_count) / any_value(m.n) AS calls_per_min,
               sum(d.error_count) / nullif(sum(d.call_count), 0) AS error_rate,
               any_value(l.p95) AS callee_p95_ms
        FROM deps d CROSS JOIN minutes m LEFT JOIN latency l ON l.service = d.child_service
        GROUP BY d.parent_service, d.child_service
        ORDER BY d.parent_service, d.child_service
    """
    return _df(src, sql, [start, end, start, end])


@dataclass
class ServiceHealth:
    """Inputs of `dashboard.status.service_statuses` for a time span (not only "now")."""

    snapshot: pd.DataFrame
    incidents: pd.DataFrame
    anomalies: pd.DataFrame


def service_health(src: Source, start: datetime, end: datetime) -> ServiceHealth:
    """Services with metrics in the span, incidents overlapping it, anomalies in it."""
    snapshot = _df(
        src,
        f"""SELECT service, max(window_start) AS last_window,
                   sum(request_count) / (count(*) * 60.0) AS request_rate,
                   sum(error_count) / nullif(sum(request_count), 0) AS error_rate,
                   max(p95_latency_ms) AS p95_latency_ms
            FROM {tables.SERVICE_METRICS} WHERE window_start >= ? AND window_start < ?
            GROUP BY service ORDER BY service""",
        [start, end],
    )
    incidents = _df(
        src,
        f"""SELECT id, service, status, started_at, ended_at, peak_severity, root_cause_service, related_services
            FROM {tables.INCIDENTS}
            WHERE started_at < ? AND (ended_at IS NULL OR ended_at >= ?)""",
        [end, start],
    )
    anomalies = _df(
        src,
        f"""SELECT service, count(*) AS anomalies, max(score) AS max_score, max(window_start) AS last_anomaly
            FROM {tables.ANOMALIES} WHERE window_start >= ? AND window_start < ? GROUP BY service""",
        [start, end],
    )
    return ServiceHealth(snapshot, incidents, anomalies)
