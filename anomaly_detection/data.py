"""Reads of the tables this stage consumes (all read-only, through `Store`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from observability import tables
from observability.store import Store

METRIC_COLS = (
    "window_start, window_end, service, request_count, error_count, client_error_count, error_rate, "
    "avg_latency_ms, p50_latency_ms, p95_latency_ms, p99_latency_ms, max_latency_ms"
)


def watermark(store: Store) -> datetime | None:
    """The stream's event-time watermark: windows ending at or before it are final."""
    row = store.fetch_one(f"SELECT max(watermark) FROM {tables.STREAM_PROGRESS}")
    return row[0] if row and row[0] is not None else None


def detection_horizon(
    store: Store, settle_seconds: float, live_seconds: float, now: datetime | None = None
) -> datetime | None:
    """How far windows are final for the detector: the stream's watermark, or, while the stream is
    live (its newest event within `live_seconds` of the wall clock `now`), the whole minute at least
    `settle_seconds` behind its newest event, whichever is later.

    Why not the watermark alone: it trails the newest event by WATERMARK_SECONDS (60 s), so a
    fault's first window would be scored two minutes after the fault began (issue 17). Events of a
    live stream arrive within seconds; the watermark's longer wait serves the aggregates, which
    still take late rows. The newest event time is capped at the wall clock `now`: an event from a
    clock far in the future must not make the coming minutes final (they would read as silence).
    Not live (a backlog being caught up, a replay): the partitions' reads may be apart in event
    time by more than the settle time, so only the watermark says what is complete.
    """
    row = store.fetch_one(f"SELECT max(watermark), max(max_event_time) FROM {tables.STREAM_PROGRESS}")
    wm, newest = (row or (None, None))[:2]
    if newest is None:
        return wm
    now = now or datetime.now(UTC).replace(tzinfo=None)
    if newest < now - timedelta(seconds=live_seconds):
        return wm
    settled = pd.Timestamp(min(newest, now) - timedelta(seconds=settle_seconds)).floor("min").to_pydatetime()
    return settled if wm is None or settled > wm else wm


def metrics(
    store: Store, start: datetime | None = None, end: datetime | None = None, *, final_before: datetime | None = None
) -> pd.DataFrame:
    """service_metrics rows with start <= window_start < end (and window_end <= final_before)."""
    where, params = ["1=1"], []
    if start is not None:
        where.append("window_start >= ?")
        params.append(start)
    if end is not None:
        where.append("window_start < ?")
        params.append(end)
    if final_before is not None:
        where.append("window_end <= ?")
        params.append(final_before)
    return store.fetch_df(
        f"SELECT {METRIC_COLS} FROM {tables.SERVICE_METRICS} WHERE {' AND '.join(where)} ORDER BY service, window_start",
        params,
    )


def unscored(store: Store, final_before: datetime, limit_end: datetime | None = None) -> pd.DataFrame:
    """Final windows after each service's detector_progress mark (all of a new service's)."""
    sql = f"""
        SELECT {", ".join("m." + c.strip() for c in METRIC_COLS.split(","))}
        FROM {tables.SERVICE_METRICS} m
        LEFT JOIN {tables.DETECTOR_PROGRESS} p ON p.service = m.service
        WHERE m.window_end <= ? AND (p.last_window_start IS NULL OR m.window_start > p.last_window_start)
        {"AND m.window_start < ?" if limit_end is not None else ""}
        ORDER BY m.window_start, m.service
    """
    params = [final_before] + ([limit_end] if limit_end is not None else [])
    return store.fetch_df(sql, params)


def first_unscored_start(store: Store, final_before: datetime) -> datetime | None:
    row = store.fetch_one(
        f"""SELECT min(m.window_start) FROM {tables.SERVICE_METRICS} m
            LEFT JOIN {tables.DETECTOR_PROGRESS} p ON p.service = m.service
            WHERE m.window_end <= ? AND (p.last_window_start IS NULL OR m.window_start > p.last_window_start)""",
        [final_before],
    )
    return row[0] if row else None


def progress_marks(store: Store) -> dict[str, datetime]:
    """service -> the start of the last minute the detector has judged for it."""
    return {
        s: pd.Timestamp(t).to_pydatetime()
        for s, t in store.fetch_all(f"SELECT service, last_window_start FROM {tables.DETECTOR_PROGRESS}")
    }


def services_since(store: Store, since: datetime) -> set[str]:
    """Services with a window starting at or after `since`."""
    return {
        r[0]
        for r in store.fetch_all(
            f"SELECT DISTINCT service FROM {tables.SERVICE_METRICS} WHERE window_start >= ?", [since]
        )
    }


def pending_low(store: Store) -> dict[str, tuple[datetime, datetime]]:
    """service -> (start, end) of a low anomaly in its last judged minute: half of a possible "two lows in a row"."""
    rows = store.fetch_all(
        f"""SELECT a.service, a.window_start, a.window_end FROM {tables.ANOMALIES} a
            JOIN {tables.DETECTOR_PROGRESS} p ON p.service = a.service AND p.last_window_start = a.window_start
            WHERE a.severity = 'low'"""
    )
    return {s: (pd.Timestamp(a).to_pydatetime(), pd.Timestamp(b).to_pydatetime()) for s, a, b in rows}


def incident_spans(store: Store) -> pd.DataFrame:
    """(service, started_at, ended_at) of every service an incident holds: a correlated
    incident covers its related services too."""
    return store.fetch_df(
        f"""SELECT service, started_at, coalesce(ended_at, TIMESTAMP '9999-01-01') AS ended_at FROM {tables.INCIDENTS}
            UNION ALL
            SELECT unnest(related_services) AS service, started_at, coalesce(ended_at, TIMESTAMP '9999-01-01') AS ended_at
            FROM {tables.INCIDENTS} WHERE len(related_services) > 0"""
    )


def windows_per_service(store: Store) -> float:
    """service_metrics windows per service (0 when there are none): how much history there is to train on."""
    n, services = store.fetch_one(f"SELECT count(*), count(DISTINCT service) FROM {tables.SERVICE_METRICS}")
    return n / services if services else 0.0


def anomaly_kinds(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """(service, window_start, anomaly_type) of the stored anomalies with start <= window_start <= end."""
    return store.fetch_df(
        f"SELECT service, window_start, anomaly_type FROM {tables.ANOMALIES} WHERE window_start >= ? AND window_start <= ?",
        [start, end],
    )


def scenario_labels(store: Store) -> pd.DataFrame:
    return store.fetch_df(f"SELECT * FROM {tables.SCENARIO_LABELS}")


def dependencies(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    return store.fetch_df(
        f"""SELECT parent_service, child_service, sum(call_count) AS call_count, sum(error_count) AS error_count
            FROM {tables.SERVICE_DEPENDENCIES} WHERE window_start >= ? AND window_start < ?
            GROUP BY parent_service, child_service""",
        [start, end],
    )


def trace_samples(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """Sampled trace ids per (window_start, service), errors first then slow then normal."""
    return store.fetch_df(
        f"""SELECT window_start, service, trace_id, reason FROM {tables.TRACE_SAMPLES}
            WHERE window_start >= ? AND window_start <= ?
            ORDER BY window_start, service, CASE reason WHEN 'error' THEN 0 WHEN 'slow' THEN 1 ELSE 2 END, trace_id""",
        [start, end],
    )


def mask_spans(df: pd.DataFrame, spans: pd.DataFrame, pad_minutes: int = 0) -> pd.Series:
    """True for rows of `df` inside any (service, started_at, ended_at) span."""
    inside = pd.Series(False, index=df.index)
    if spans is None or spans.empty or df.empty:
        return inside
    pad = pd.Timedelta(minutes=pad_minutes)
    ws = pd.to_datetime(df["window_start"])
    for service, g in spans.groupby("service"):
        rows = df["service"] == service
        for s, e in zip(pd.to_datetime(g["started_at"]), pd.to_datetime(g["ended_at"]), strict=True):
            inside |= rows & (ws >= s - pad) & (ws <= e + pad)
    return inside
