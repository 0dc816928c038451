"""The DuckDB sink: one short transaction per micro-batch, exactly once.

Everything a micro-batch produces (window rows, trace samples, dependency
edges, dead letters, its stream_progress row, the aggregated-metrics
records it will publish, staged in the outbox, and its bronze files queued for
the silver and gold layers (`spark.layer_queue`); or a logs / metrics batch's
records and dead letters) is written in ONE DuckDB transaction together with a
`sink_commits(sink, batch_id)` row. A replayed
batch (Spark re-runs the last uncommitted batch after a crash) finds its
commit row and writes nothing, and a crash before the commit leaves nothing
behind, so no count is ever doubled or lost. Window rows are upserted on
(window_start, service[, endpoint]): update mode re-emits a window's full
aggregate when late data refines it, and the newest value wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import pyarrow as pa

from observability import outbox, tables
from observability.store import Store, utcnow, write_heartbeat
from observability.tables import METRIC_VALUE_COLUMNS
from spark import layer_queue, trace_index

_METRIC_COLS = ("window_start", "window_end", "service", *METRIC_VALUE_COLUMNS, "updated_at")


@dataclass
class BatchOutput:
    """One micro-batch's rows, as pandas frames (timestamps naive UTC)."""

    batch_id: int
    metrics: pd.DataFrame  # window_metrics rows; endpoint NULL = service level
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)  # window_start, service, trace_id, reason, sort_key
    dependencies: pd.DataFrame = field(default_factory=pd.DataFrame)
    dead_letters: pd.DataFrame = field(default_factory=pd.DataFrame)  # received_at_ms, source, reason, payload
    rows_in: int = 0
    rows_rejected: int = 0
    rows_late: int = 0
    max_event_time: datetime | None = None
    watermark: datetime | None = None
    outbox_topic: str = ""  # where the outbox records go once committed
    outbox: list = field(default_factory=list)  # (id, key, value) records (observability.outbox.stage)
    traces: pa.Table | pd.DataFrame = field(default_factory=pd.DataFrame)  # per-trace partial rows (trace_index)
    layer_files: list[str] = field(default_factory=list)  # bronze files whose layers spark.layer_queue writes
    heartbeat: str | None = None  # the heartbeats row written with the batch (its component), if any


class DuckDBSink:
    def __init__(self, store: Store, sink: str, sample_caps: dict[str, int]) -> None:
        self.store = store
        self.sink = sink
        self.sample_caps = sample_caps
        self._last_written: int | None = None  # the newest batch this process committed

    def is_committed(self, batch_id: int) -> bool:
        """Whether the batch was committed (a replay). Past a batch this process committed, no:
        one job runs a checkpoint and its batch ids only grow, so no connection is needed."""
        if self._last_written is not None and batch_id > self._last_written:
            return False
        row = self.store.fetch_one(
            f"SELECT 1 FROM {tables.SINK_COMMITS} WHERE sink = ? AND batch_id = ?", [self.sink, batch_id]
        )
        return row is not None

    def batch_key(self, batch_id: int) -> str:
        """The batch's name in tables outside sink_commits (spark.layer_queue)."""
        return f"{self.sink}:{batch_id}"

    def _claim(self, con, batch_id: int) -> bool:
        """Inside the transaction: False when this batch was already committed."""
        done = con.execute(
            f"SELECT 1 FROM {tables.SINK_COMMITS} WHERE sink = ? AND batch_id = ?", [self.sink, batch_id]
        ).fetchone()
        if done:
            return False
        con.execute(
            f"INSERT INTO {tables.SINK_COMMITS} (sink, batch_id, committed_at) VALUES (?, ?, ?)",
            [self.sink, batch_id, utcnow()],
        )
        return True

    def write_batch(self, out: BatchOutput) -> bool:
        """Write the batch atomically; False when it had already been committed (a replay)."""
        now = utcnow()
        metrics = out.metrics.copy()
        metrics["updated_at"] = now
        service_rows = metrics[metrics["endpoint"].isna()][list(_METRIC_COLS)]
        endpoint_rows = metrics[metrics["endpoint"].notna()][[*_METRIC_COLS[:3], "endpoint", *_METRIC_COLS[3:]]]

        def work(con) -> bool:
            if not self._claim(con, out.batch_id):
                return False
            _upsert(con, tables.SERVICE_METRICS, service_rows)
            _upsert(con, tables.ENDPOINT_METRICS, endpoint_rows)
            self._insert_samples(con, out.samples)
            _add_dependencies(con, out.dependencies)
            trace_index.upsert(con, out.traces, now)
            _insert_dead_letters(con, out.dead_letters)
            layer_queue.enqueue(con, self.batch_key(out.batch_id), out.layer_files, now)
            outbox.stage(con, out.outbox_topic, out.outbox, now)
            if out.heartbeat:  # in the commit's transaction: one connection less per batch
                write_heartbeat(con, out.heartbeat, f"batch {out.batch_id}", now)
            con.execute(
                f"""INSERT OR REPLACE INTO {tables.STREAM_PROGRESS}
                    (batch_id, processed_at, rows_in, rows_rejected, rows_late, max_event_time, watermark)
                    VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [out.batch_id, now, out.rows_in, out.rows_rejected, out.rows_late, out.max_event_time, out.watermark],
            )
            return True

        written = self.store.write(work)
        if written:
            self._last_written = out.batch_id
        return written

    def write_dead_letters(self, batch_id: int, rows: pd.DataFrame) -> bool:
        """The dead-letter topic stream: its rows and its own commit row, one transaction."""

        def work(con) -> bool:
            if not self._claim(con, batch_id):
                return False
            _insert_dead_letters(con, rows)
            return True

        return self.store.write(work)

    def write_records(self, batch_id: int, table: str, records, dead_letters) -> bool:
        """A logs or metrics micro-batch (Arrow tables): its records, dead letters and
        commit row in one transaction; False when it had already been committed."""

        def work(con) -> bool:
            if not self._claim(con, batch_id):
                return False
            if records.num_rows:
                con.register("_records", records)
                cols = ", ".join(records.column_names)
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _records")
                con.unregister("_records")
            if dead_letters.num_rows:
                _insert_dead_letters(con, dead_letters)
            return True

        return self.store.write(work)

    def _insert_samples(self, con, samples: pd.DataFrame) -> None:
        """Keep each reason's cap per (window, service) across batches (best sort key first); a trace once."""
        if samples is None or samples.empty:
            return
        caps = pd.DataFrame({"reason": list(self.sample_caps), "cap": list(self.sample_caps.values())})
        con.register("_samples", samples[["window_start", "service", "trace_id", "reason", "sort_key"]])
        con.register("_caps", caps)
        con.execute(
            f"""
            INSERT OR IGNORE INTO {tables.TRACE_SAMPLES} (window_start, service, trace_id, reason)
            WITH kept AS (  -- the batch's windows only: the whole table grew to 3.5M rows over 7 days
                SELECT window_start, service, trace_id, reason FROM {tables.TRACE_SAMPLES}
                WHERE window_start BETWEEN ? AND ?  -- constants: the scan skips row groups by their min/max
                  AND window_start IN (SELECT DISTINCT window_start FROM _samples)
            ),
            existing AS (SELECT window_start, service, reason, count(*) AS n FROM kept GROUP BY ALL),
            fresh AS (
                SELECT s.* FROM _samples s
                ANTI JOIN kept t USING (window_start, service, trace_id)
            )
            SELECT f.window_start, f.service, f.trace_id, f.reason
            FROM fresh f JOIN _caps c USING (reason)
            LEFT JOIN existing e USING (window_start, service, reason)
            QUALIFY row_number() OVER (PARTITION BY f.window_start, f.service, f.reason ORDER BY f.sort_key, f.trace_id)
                    <= c.cap - coalesce(e.n, 0)
            """,
            [samples["window_start"].min(), samples["window_start"].max()],
        )
        con.unregister("_samples")
        con.unregister("_caps")


def _upsert(con, table: str, df: pd.DataFrame) -> None:
    if df.empty:
        return
    con.register("_rows", df)
    cols = ", ".join(df.columns)
    con.execute(f"INSERT OR REPLACE INTO {table} ({cols}) SELECT {cols} FROM _rows")
    con.unregister("_rows")


def _add_dependencies(con, deps: pd.DataFrame) -> None:
    """Edges are counted per micro-batch, so a window's counts add up across batches."""
    if deps is None or deps.empty:
        return
    con.register("_deps", deps[["window_start", "parent_service", "child_service", "call_count", "error_count"]])
    con.execute(
        f"""
        INSERT INTO {tables.SERVICE_DEPENDENCIES} (window_start, parent_service, child_service, call_count, error_count)
        SELECT * FROM _deps
        ON CONFLICT (window_start, parent_service, child_service) DO UPDATE SET
            call_count = call_count + excluded.call_count,
            error_count = error_count + excluded.error_count
        """
    )
    con.unregister("_deps")


def _insert_dead_letters(con, rows) -> None:
    """Dead-letter rows (received_at_ms, source, reason, payload): a pandas frame or an Arrow table."""
    if rows is None or (rows.num_rows == 0 if hasattr(rows, "num_rows") else rows.empty):
        return
    cols = ["received_at_ms", "source", "reason", "payload"]
    con.register("_dead", rows.select(cols) if hasattr(rows, "num_rows") else rows[cols])
    con.execute(
        f"""INSERT INTO {tables.DEAD_LETTER} (received_at, source, reason, payload)
            SELECT epoch_ms(received_at_ms::BIGINT), source, reason, payload FROM _dead"""
    )
    con.unregister("_dead")
