"""Error log records of an incident, from the `logs` table (OTLP logs the Spark job stored).

One definition of an error log and of "an incident's error logs", read by the
dashboard (the Incidents page) and the narrator (its facts), so both show the
same lines. An error log has OTLP SeverityNumber ERROR or FATAL (17-24) or,
when a sender set no number, a severity text that says so.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

from observability import tables
from observability.store import Store

ERROR_SEVERITY_NUMBER = 17  # OTLP SeverityNumber: 17-20 ERROR, 21-24 FATAL
ERROR_LOG_SQL = (
    f"(severity_number >= {ERROR_SEVERITY_NUMBER} OR (coalesce(severity_number, 0) = 0 AND "
    "upper(severity_text) IN ('ERROR', 'FATAL', 'CRITICAL', 'ALERT', 'EMERGENCY')))"
)
# A sample trace's logs may sit a little outside the incident's windows.
TRACE_SLACK = timedelta(minutes=15)
MAX_LINE_CHARS = 160

Source = Store | duckdb.DuckDBPyConnection


def _df(src: Source, sql: str, params: list) -> pd.DataFrame:
    if isinstance(src, Store):
        return src.fetch_df(sql, params)
    return src.execute(sql, params).df()


def incident_error_logs(
    src: Source, services: list[str], start: datetime, end: datetime, trace_ids: list[str], limit: int = 200
) -> pd.DataFrame:
    """Error logs of the services in [start, end), and of the sample traces (within TRACE_SLACK),
    newest first; `matched` says why each row is shown (service | trace)."""
    sql = f"""
        SELECT timestamp, service, severity_text, severity_number, body, trace_id, span_id, attributes,
               CASE WHEN list_contains(?, trace_id) THEN 'trace' ELSE 'service' END AS matched
        FROM {tables.LOGS}
        WHERE {ERROR_LOG_SQL} AND (
              (list_contains(?, service) AND timestamp >= ? AND timestamp < ?)
           OR (list_contains(?, trace_id) AND timestamp >= ? AND timestamp < ?))
        ORDER BY timestamp DESC, service
        LIMIT {int(limit)}
    """
    ids = [t.lower() for t in trace_ids]
    params = [ids, list(services), start, end, ids, start - TRACE_SLACK, end + TRACE_SLACK]
    return _df(src, sql, params)


def top_error_lines(src: Source, service: str, start: datetime, end: datetime, limit: int = 3) -> list[tuple[str, int]]:
    """The most frequent error log bodies of a service in [start, end): whitespace folded to one
    line, cut to MAX_LINE_CHARS, deduplicated (ties: the most recent first)."""
    sql = f"""
        WITH errors AS (
            SELECT trim(regexp_replace(body, '\\s+', ' ', 'g')) AS text, timestamp
            FROM {tables.LOGS}
            WHERE service = ? AND timestamp >= ? AND timestamp < ? AND {ERROR_LOG_SQL} AND body IS NOT NULL
        )
        SELECT CASE WHEN length(text) > {MAX_LINE_CHARS} THEN left(text, {MAX_LINE_CHARS - 3}) || '...' ELSE text END AS line,
               count(*) AS n, max(timestamp) AS last_seen
        FROM errors WHERE text <> ''
        GROUP BY line ORDER BY n DESC, last_seen DESC, line LIMIT {int(limit)}
    """
    df = _df(src, sql, [service, start, end])
    return [(str(line), int(n)) for line, n in zip(df["line"], df["n"], strict=True)]
