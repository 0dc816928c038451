"""The rows the detector owns: anomalies, incidents and detector_progress.

Why a module of its own: a detection cycle's verdicts, incidents and progress
mark commit in ONE transaction (with the anomalies staged in the outbox), so a
re-run scores each window exactly once; the service decides what to write, and
these functions say how. `open_incidents` picks up the open incidents again in
one query, with when each was last anomalous.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from anomaly_detection import incidents, root_cause
from observability import outbox, tables
from observability.store import Store

ANOMALY_COLUMNS = [
    "id",
    "service",
    "window_start",
    "window_end",
    "detected_at",
    "anomaly_type",
    "severity",
    "score",
    "detectors",
    "baseline",
    "observed",
    "sample_trace_ids",
]

_OPEN_INCIDENTS = f"""
WITH open_inc AS (SELECT * FROM {tables.INCIDENTS} WHERE status = 'open'),
taken AS (  -- the windows each open incident took, by id
    SELECT o.id, max(a.window_end) AS last_end FROM open_inc o JOIN {tables.ANOMALIES} a ON a.incident_id = o.id GROUP BY o.id
),
own AS (  -- its service's anomalies since it opened that name no incident (rows older than anomalies.incident_id)
    SELECT o.id, max(a.window_end) AS last_end FROM open_inc o
    JOIN {tables.ANOMALIES} a ON a.incident_id IS NULL AND a.service = o.service AND a.window_start >= o.started_at
    GROUP BY o.id
)
SELECT o.*, l.last_anomaly_end FROM open_inc o
LEFT JOIN (SELECT id, max(last_end) AS last_anomaly_end FROM (SELECT * FROM taken UNION ALL SELECT * FROM own) GROUP BY id) l
    ON l.id = o.id
ORDER BY o.started_at, o.id
"""


def open_incidents(store: Store) -> list[incidents.Incident]:
    """Every open incident, `last_anomaly_end` the end of its last anomalous window (or its start)."""
    return [_incident(r) for r in store.fetch_df(_OPEN_INCIDENTS).itertuples(index=False)]


def _incident(r) -> incidents.Incident:
    started = pd.Timestamp(r.started_at).to_pydatetime()
    last = r.last_anomaly_end
    return incidents.Incident(
        r.id,
        r.service,
        started,
        None,
        r.status,
        r.peak_severity,
        r.root_cause_service,
        list(r.related_services if r.related_services is not None else []),
        pd.Timestamp(r.updated_at).to_pydatetime(),
        started if pd.isna(last) else pd.Timestamp(last).to_pydatetime(),
        root_cause.parse(getattr(r, "root_cause_candidates", None)),
    )


def write_cycle(
    con: duckdb.DuckDBPyConnection,
    *,
    anomalies: pd.DataFrame,
    messages: list[tuple[str, str, dict]],
    topic: str,
    changed: list[incidents.Incident],
    progress: pd.DataFrame,
    now,
) -> None:
    """Inside the caller's transaction: a chunk's anomalies (and their outbox records), the
    incidents it changed and the services' progress marks."""
    if len(anomalies):
        upsert(con, tables.ANOMALIES, anomalies)
        outbox.stage(con, topic, messages, now)
    if changed:
        upsert(con, tables.INCIDENTS, pd.DataFrame([i.row() for i in changed]))
    upsert(con, tables.DETECTOR_PROGRESS, progress[["service", "last_window_start", "updated_at"]])


def upsert(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame) -> None:
    """INSERT OR REPLACE the rows (by the table's primary key), by column name."""
    name = f"_upsert_{table}"
    con.register(name, rows)
    try:
        cols = ", ".join(rows.columns)
        con.execute(f"INSERT OR REPLACE INTO {table} ({cols}) SELECT {cols} FROM {name}")
    finally:
        con.unregister(name)
