"""The trace index: one `trace_index` row per trace, merged from every micro-batch's spans.

Where it is computed: in the source's Python worker, beside the other side outputs
(`spark.side_outputs.compute`), over the range's valid (deduplicated) spans, as one
partial row per (range, trace). A trace's spans share a partition (producers key by
trace id) but may straddle ranges and micro-batches, so the sink merges:

- start_time = min, end_time = max (span start + latency), duration_ms = end - start;
- span_count, error_count (status >= 500) = sums; services = union;
- the root (service, endpoint, span id) is the span without a parent; until it has
  arrived, the earliest span's service and endpoint stand in (root_span_id NULL), and a
  later batch carrying the real root replaces them.

Exactly once: the merge runs inside the batch's sink transaction, with its
`sink_commits` row (`spark.sink.DuckDBSink.write_batch`): a replayed batch finds the
commit row and writes nothing, so the sums are never doubled, and a crash before the
commit leaves nothing behind.
"""

from __future__ import annotations

import contextlib

import duckdb
import pandas as pd
import pyarrow as pa

from observability import tables

# One partial row per (range, trace); `services` a list. Times are epoch microseconds.
PARTIAL_ARROW_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("start_us", pa.int64()),
        ("end_us", pa.int64()),
        ("root_service", pa.string()),
        ("root_endpoint", pa.string()),
        ("root_span_id", pa.string()),
        ("span_count", pa.int64()),
        ("error_count", pa.int64()),
        ("services", pa.list_(pa.string())),
    ]
)
PARTIAL_COLUMNS = tuple(PARTIAL_ARROW_SCHEMA.names)

# Over `ev` (bronze columns): the root is the parentless span, else the earliest span.
PARTIAL_SQL = """
    SELECT trace_id,
           min(epoch_us(timestamp)) AS start_us,
           max(epoch_us(timestamp) + CAST(round(coalesce(latency_ms, 0) * 1000) AS BIGINT)) AS end_us,
           arg_min(service, (parent_span_id IS NOT NULL, timestamp, span_id)) AS root_service,
           arg_min(endpoint, (parent_span_id IS NOT NULL, timestamp, span_id)) AS root_endpoint,
           min(span_id) FILTER (WHERE parent_span_id IS NULL) AS root_span_id,
           count(*) AS span_count,
           count(*) FILTER (WHERE status_code >= 500) AS error_count,
           list_sort(list_distinct(list(service))) AS services
    FROM ev WHERE trace_id IS NOT NULL
    GROUP BY trace_id ORDER BY trace_id
"""


def partials(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The range's partial rows (PARTIAL_COLUMNS) as Arrow: staged beside the range's manifest
    as an Arrow IPC file (`spark.staging`), read back by the driver without Python objects.

    They went through the manifest's JSON before (issue 17): on a 500,000-span batch (~100,000
    traces) that was ~0.5 s of the driver's serial time per batch to decode and frame, and
    ~0.1 s of each source worker's CPU per range to convert and encode."""
    return con.sql(PARTIAL_SQL).to_arrow_table()


def batch_frame(staged) -> pa.Table:
    """The micro-batch's partial rows, from its staged ranges (in memory, or their staged files)."""
    parts = []
    for s in staged:
        table = getattr(s, "traces", None)
        if table is None and getattr(s, "traces_file", None):
            with pa.memory_map(s.traces_file) as source:
                table = pa.ipc.open_file(source).read_all()
        if table is not None and table.num_rows:
            parts.append(table.select(list(PARTIAL_COLUMNS)).cast(PARTIAL_ARROW_SCHEMA))
    return pa.concat_tables(parts) if parts else PARTIAL_ARROW_SCHEMA.empty_table()


# Partial rows merged per trace (a trace in several ranges of one batch): the best root is the
# real one (root_span_id set), else the earliest span's. A batch's trace is nearly always in one
# range (producers key spans by trace id, and a batch reads one range per partition), and its
# partial's services are sorted and distinct already: only traces of several partials merge
# their lists (issue 17: list_sort(list_distinct(flatten(list(...)))) over every trace was
# ~0.18 CPU-s per 500,000-span batch, ~90% of this query; ~0.04 now).
_MERGE_BATCH_SQL = """
    WITH g AS (
        SELECT trace_id,
               min(start_us) AS start_us,
               max(end_us) AS end_us,
               arg_min(root_service, (root_span_id IS NULL, start_us)) AS root_service,
               arg_min(root_endpoint, (root_span_id IS NULL, start_us)) AS root_endpoint,
               min(root_span_id) AS root_span_id,
               sum(span_count)::BIGINT AS span_count,
               sum(error_count)::BIGINT AS error_count,
               first(services) AS services,
               count(*) AS parts
        FROM _trace_partials GROUP BY trace_id
    )
    SELECT g.* EXCLUDE (services, parts), CASE WHEN g.parts = 1 THEN g.services ELSE m.services END AS services
    FROM g LEFT JOIN (
        SELECT trace_id, list_sort(list_distinct(flatten(list(services)))) AS services
        FROM _trace_partials
        WHERE trace_id IN (SELECT trace_id FROM g WHERE parts > 1)
        GROUP BY trace_id
    ) m USING (trace_id)
"""

# The existing row (t) wins the root when it has the real one, or when neither has and it started first.
_KEEP_OLD_ROOT = "t.root_span_id IS NOT NULL OR (b.root_span_id IS NULL AND t.start_time <= b.start_time)"

_INDEX_COLUMNS = (
    "trace_id, start_time, end_time, root_service, root_endpoint, root_span_id, duration_ms, span_count, "
    "error_count, services, updated_at, trace_key"
)


def upsert(con: duckdb.DuckDBPyConnection, partial: pa.Table | pd.DataFrame | None, now) -> int:
    """Inside the sink's transaction: merge the batch's partial rows into trace_index; returns traces touched.

    The batch's traces (merged across its ranges) update the rows already there and the rest
    are appended. Rows already there are found by `trace_key` (`tables.trace_key_sql`): a scan
    of one 8-byte column and a hash probe, then trace_id compared on the rows it matched (a
    64-bit collision finds a row the update then leaves alone). The table has no index to keep
    trace_id unique: this merge, its one writer, keeps it so (a batch's traces are distinct
    after the merge, and a replayed batch writes nothing: `spark.sink`)."""
    if partial is None or len(partial) == 0:
        return 0
    columns = list(PARTIAL_COLUMNS)
    con.register("_trace_partials", partial.select(columns) if isinstance(partial, pa.Table) else partial[columns])
    try:
        batch = con.sql(
            f"""SELECT trace_id, make_timestamp(start_us) AS start_time, make_timestamp(end_us) AS end_time,
                       root_service, root_endpoint, root_span_id, span_count, error_count, services,
                       {tables.trace_key_sql()} AS trace_key
                FROM ({_MERGE_BATCH_SQL})"""
        ).to_arrow_table()
    finally:
        con.unregister("_trace_partials")
    con.register("_trace_batch", batch)
    try:
        updated = _update_existing(con, now)
        new = "_trace_batch" if updated is None else "_trace_batch ANTI JOIN _trace_updated USING (trace_id)"
        con.execute(
            f"""INSERT INTO {tables.TRACE_INDEX} ({_INDEX_COLUMNS})
                SELECT trace_id, start_time, end_time, root_service, root_endpoint, root_span_id,
                       (epoch_us(end_time) - epoch_us(start_time)) / 1000.0, span_count, error_count, services,
                       ?, trace_key
                FROM {new}""",
            [now],
        )
    finally:
        con.unregister("_trace_batch")
        with contextlib.suppress(duckdb.Error):
            con.unregister("_trace_updated")
    return batch.num_rows


def _update_existing(con: duckdb.DuckDBPyConnection, now) -> pa.Table | None:
    """Merge `_trace_batch` into the rows trace_index already has for its traces (registered
    as `_trace_updated`, their trace ids); None when it has none."""
    t = tables.TRACE_INDEX
    found = con.sql(
        f"SELECT rowid AS row_id FROM {t} WHERE trace_key IN (SELECT trace_key FROM _trace_batch)"
    ).to_arrow_table()
    if found.num_rows == 0:
        return None
    con.register("_trace_found", found)
    try:
        updated = con.sql(
            f"""UPDATE {t} AS t SET
                    start_time = least(t.start_time, b.start_time),
                    end_time = greatest(t.end_time, b.end_time),
                    duration_ms = (epoch_us(greatest(t.end_time, b.end_time))
                                   - epoch_us(least(t.start_time, b.start_time))) / 1000.0,
                    root_service = CASE WHEN {_KEEP_OLD_ROOT} THEN t.root_service ELSE b.root_service END,
                    root_endpoint = CASE WHEN {_KEEP_OLD_ROOT} THEN t.root_endpoint ELSE b.root_endpoint END,
                    root_span_id = coalesce(t.root_span_id, b.root_span_id),
                    span_count = t.span_count + b.span_count,
                    error_count = t.error_count + b.error_count,
                    services = list_sort(list_distinct(list_concat(t.services, b.services))),
                    updated_at = ?
                FROM _trace_batch AS b
                WHERE t.rowid IN (SELECT row_id FROM _trace_found) AND t.trace_id = b.trace_id
                RETURNING t.trace_id""",
            params=[now],
        ).to_arrow_table()
    finally:
        con.unregister("_trace_found")
    con.register("_trace_updated", updated)
    return updated
