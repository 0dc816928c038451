"""Events (JSONL) -> the Spark job's tables with one DuckDB GROUP BY (evaluation harness only).

The evaluation defaults to the real Spark job; this stands in with the same
table contract (`service_metrics`, `trace_samples`, `service_dependencies`,
`stream_progress`) when `--aggregator duckdb` is asked for, e.g. to evaluate the
detector alone quickly. Percentiles are exact here (Spark's are approximate).
"""

from __future__ import annotations

from pathlib import Path

from observability import tables
from observability.columns import duckdb_json_columns, select
from observability.schema import DEFAULT_KIND, ENTRY_SPAN_SQL, EVENT_COLUMNS
from observability.store import Store

_FIELDS = ("timestamp", "service", "status_code", "latency_ms", "trace_id", "span_id", "parent_span_id", "kind")


def aggregate(store: Store, events_file: Path, watermark_delay_seconds: int = 60) -> int:
    columns = duckdb_json_columns(select(EVENT_COLUMNS, _FIELDS))
    src = f"read_json('{Path(events_file)}', format='newline_delimited', columns={columns})"

    def work(con) -> int:
        con.execute(
            f"""CREATE TEMP TABLE ev AS SELECT CAST(replace(replace(timestamp, 'T', ' '), 'Z', '') AS TIMESTAMP) AS ts,
                service, status_code, latency_ms, trace_id, span_id, parent_span_id,
                coalesce(kind, '{DEFAULT_KIND}') AS kind FROM {src}"""
        )
        con.execute("ALTER TABLE ev ADD COLUMN ws TIMESTAMP")
        con.execute("UPDATE ev SET ws = time_bucket(INTERVAL 1 minute, ts)")
        con.execute(
            f"""INSERT OR REPLACE INTO {tables.SERVICE_METRICS}
            SELECT ws, ws + INTERVAL 1 minute, service, count(*), count(*) FILTER (status_code >= 500),
                   count(*) FILTER (status_code BETWEEN 400 AND 499),
                   count(*) FILTER (status_code >= 500) / count(*),
                   avg(latency_ms), quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.95),
                   quantile_cont(latency_ms, 0.99), max(latency_ms), now()::TIMESTAMP
            FROM ev WHERE {ENTRY_SPAN_SQL} GROUP BY ws, service"""
        )
        con.execute(
            f"""INSERT OR REPLACE INTO {tables.TRACE_SAMPLES}
            WITH ranked AS (
                SELECT ws, service, trace_id, status_code,
                       row_number() OVER (PARTITION BY ws, service ORDER BY latency_ms DESC) AS rk_slow,
                       row_number() OVER (PARTITION BY ws, service, (status_code >= 500) ORDER BY trace_id) AS rk_grp
                FROM ev WHERE trace_id IS NOT NULL
            ), picked AS (
                SELECT ws, service, trace_id, 'error' AS reason, 0 AS pri FROM ranked WHERE status_code >= 500 AND rk_grp <= 20
                UNION ALL SELECT ws, service, trace_id, 'slow', 1 FROM ranked WHERE rk_slow <= 3
                UNION ALL SELECT ws, service, trace_id, 'normal', 2 FROM ranked WHERE status_code < 500 AND rk_grp <= 2
            )
            SELECT ws, service, trace_id, reason FROM picked
            QUALIFY row_number() OVER (PARTITION BY ws, service, trace_id ORDER BY pri) = 1"""
        )
        con.execute(
            f"""INSERT OR REPLACE INTO {tables.SERVICE_DEPENDENCIES}
            SELECT c.ws, p.service, c.service, count(*), count(*) FILTER (c.status_code >= 500)
            FROM ev c JOIN ev p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
            GROUP BY c.ws, p.service, c.service"""
        )
        n, max_ts = con.execute("SELECT count(*), max(ts) FROM ev").fetchone()
        batch = con.execute(f"SELECT coalesce(max(batch_id), -1) + 1 FROM {tables.STREAM_PROGRESS}").fetchone()[0]
        con.execute(
            f"""INSERT INTO {tables.STREAM_PROGRESS} VALUES (?, now()::TIMESTAMP, ?, 0, 0, ?, ? - INTERVAL {int(watermark_delay_seconds)} second)""",
            [batch, n, max_ts, max_ts],
        )
        con.execute("DROP TABLE ev")
        return int(n)

    return store.write(work)
