"""Context-preserving layers beside bronze: silver (enriched spans) and gold (sampled whole traces, error text).

- bronze (`observability.bronze`): every valid span, as received, for BRONZE_RETENTION_DAYS.
- silver (`$DATA_DIR/silver/date=YYYY-MM-DD/service=NAME/part-*.parquet`): every span
  plus its context — the parent's service and endpoint (`parent_service`,
  `parent_endpoint`), its `depth` in the trace (0 = root, or the topmost span
  whose parent is not known), its `self_time_ms` (duration minus the union of
  its children's intervals, clipped to it) and `is_entry_span` (a service's
  request: `observability.schema.ENTRY_SPAN_SQL`). Kept SILVER_RETENTION_DAYS.
- gold (`$DATA_DIR/gold/traces/date=YYYY-MM-DD/part-*.parquet`, silver columns plus
  `sample_reason`): whole traces kept by biased sampling, decided per trace
  from a hash of its trace id (`keep_reason`), so every micro-batch that sees a
  part of a kept trace keeps that part too; and the `error_messages` table
  (per window, service, endpoint and message: a count and a sample trace id),
  so error text is never aggregated away. Kept GOLD_RETENTION_DAYS, with the
  aggregate tables.

The Spark job's layer queue (`spark.layer_queue`) calls `write_batch_layers`
once per committed micro-batch, with the bronze files the batch staged, beside
the next batch. File names derive from the batch's offset ranges, so a retried
or replayed batch rewrites the same files (idempotent), and the error_messages
rows go in the transaction that removes the batch from the queue (exactly once).
Context comes from the batch's traces as bronze holds them, so a trace split
across micro-batches still gets its parents, depth and sampling verdict; a
parent's self time counts the children committed when its own batch was
written. `trace_index` (merged in each batch's commit) says which traces have
spans outside the batch and where (`context_window`); a trace it does not know
falls back to CONTEXT_SLACK, 10 minutes, either side of the batch's spans.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from observability.columns import sql_with_default
from observability.schema import ENTRY_SPAN_SQL, EVENT_COLUMNS, EVENT_FIELDS
from observability.settings import Settings
from observability.span_tree import MAX_DEPTH, span_context

SILVER_EXTRA = ("parent_service", "parent_endpoint", "depth", "self_time_ms", "is_entry_span")
SILVER_COLUMNS = (*EVENT_FIELDS, *SILVER_EXTRA)
GOLD_COLUMNS = (*SILVER_COLUMNS, "sample_reason")
ERROR_MESSAGE_COLUMNS = ("window_start", "service", "endpoint", "error_message", "count", "sample_trace_id")
REASONS = ("error", "slow", "normal")
_HASH_SPACE = 2**32


@dataclass(frozen=True)
class SampleRates:
    error: float = 1.0
    slow: float = 0.5
    normal: float = 0.01

    @classmethod
    def from_settings(cls, settings: Settings) -> SampleRates:
        return cls(settings.sample_error_rate, settings.sample_slow_rate, settings.sample_normal_rate)


def trace_fraction(trace_id: str) -> float:
    """A trace id's fixed place in [0, 1): the same in every batch, process and run."""
    return int(hashlib.md5(trace_id.lower().encode()).hexdigest()[:8], 16) / _HASH_SPACE


def keep_reason(trace_id: str, has_error: bool, is_slow: bool, rates: SampleRates) -> str | None:
    """Why gold keeps a trace, or None. A trace is in the error class when a span failed
    (status >= 500), in the slow class when an entry span was over its service's p99 or
    SLA, and every trace is in the normal class; it is kept when its fraction is below the
    rate of a class it is in (the reason is the first such class)."""
    u = trace_fraction(trace_id)
    for reason, member, rate in (
        ("error", has_error, rates.error),
        ("slow", is_slow, rates.slow),
        ("normal", True, rates.normal),
    ):
        if member and u < rate:
            return reason
    return None


# --- computing a batch's layers -------------------------------------------------------
def _source(con, files: list[str]) -> str:
    """A SELECT of bronze rows in bronze column order (older files get defaults)."""
    present = [
        d[0] for d in con.execute("SELECT * FROM read_parquet(?, union_by_name=true) LIMIT 0", [files]).description
    ]
    cols = ", ".join(sql_with_default(c, present, cast=True) for c in EVENT_COLUMNS)
    return f"SELECT {cols} FROM read_parquet({_sql_list(files)}, union_by_name=true)"


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + i.replace("'", "''") + "'" for i in items) + "]"


# How far before and after a batch's spans the rest of their traces are looked for in bronze.
CONTEXT_SLACK = timedelta(minutes=10)


def context_files(bronze_dir: Path, start: datetime, end: datetime) -> list[str]:
    """Bronze files whose spans overlap [start, end] (by their footers' statistics; a file
    without them is kept): where the rest of a batch's traces lie."""
    from observability.bronze import partition_dirs

    found = sorted(str(f) for d in partition_dirs(bronze_dir, start, end) for f in d.glob("*.parquet"))
    return [f for f in found if (span := _file_span(f)) is None or (span[0] <= end and span[1] >= start)]


# Each bronze file's [first, last] span timestamp, by path, size and mtime (a rewritten file is
# read again). Bronze files do not change once written, so each footer is read once per process:
# an hour partition of a continuous job holds thousands, and handing DuckDB all of them made it
# read every footer twice per batch (issue 17).
_FILE_SPANS: dict[str, tuple[tuple[int, int], tuple[datetime, datetime] | None]] = {}
_FILE_SPANS_MAX = 50_000


def _file_span(path: str) -> tuple[datetime, datetime] | None:
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    key = (st.st_size, st.st_mtime_ns)
    hit = _FILE_SPANS.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    span = None
    try:
        meta = pq.read_metadata(path)
        column = meta.schema.names.index("timestamp")
        stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
        if stats and all(s is not None and s.has_min_max for s in stats):
            lows, highs = [s.min for s in stats], [s.max for s in stats]
            if all(isinstance(v, datetime) and v.tzinfo is None for v in lows + highs):  # bronze's naive UTC
                span = (min(lows), max(highs))
    except (OSError, ValueError, pa.ArrowException):  # unreadable or no timestamp column: DuckDB decides
        span = None
    if len(_FILE_SPANS) >= _FILE_SPANS_MAX:
        _FILE_SPANS.clear()
    _FILE_SPANS[path] = (key, span)
    return span


# Silver's context columns over `ctx` (a batch's spans and the rest of their traces): the
# definition. compute_layers computes the same in arrays (`observability.span_tree`, issue 17);
# tests/test_span_tree.py checks the two agree on fuzzed forests.
ENRICH_SQL = f"""
CREATE OR REPLACE TEMP TABLE enriched AS
WITH spans AS (SELECT * FROM ctx WHERE trace_id IS NOT NULL AND span_id IS NOT NULL),
parents AS (
    SELECT DISTINCT ON (trace_id, span_id) trace_id, span_id, service, endpoint, timestamp, latency_ms FROM spans
),
tree AS (
    WITH RECURSIVE walk(trace_id, span_id, depth) AS (
        SELECT s.trace_id, s.span_id, 0 FROM spans s
        WHERE s.parent_span_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM parents p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)
        UNION ALL
        SELECT c.trace_id, c.span_id, w.depth + 1 FROM spans c
        JOIN walk w ON c.trace_id = w.trace_id AND c.parent_span_id = w.span_id AND c.span_id <> w.span_id
        WHERE w.depth < {MAX_DEPTH}
    )
    SELECT trace_id, span_id, min(depth) AS depth FROM walk GROUP BY ALL
),
kids AS (  -- each child's interval clipped to its parent's, in ms since the epoch
    SELECT c.trace_id, c.parent_span_id AS span_id,
           greatest(epoch_us(c.timestamp), epoch_us(p.timestamp)) / 1000.0 AS s,
           least(epoch_us(c.timestamp) / 1000.0 + c.latency_ms, epoch_us(p.timestamp) / 1000.0 + p.latency_ms) AS e
    FROM spans c JOIN parents p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    WHERE c.span_id <> p.span_id
),
ordered AS (
    SELECT *, max(e) OVER (PARTITION BY trace_id, span_id ORDER BY s, e
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM kids WHERE e > s
),
islands AS (
    SELECT *, sum(CASE WHEN reach IS NULL OR s > reach THEN 1 ELSE 0 END)
              OVER (PARTITION BY trace_id, span_id ORDER BY s, e) AS island
    FROM ordered
),
covered AS (
    SELECT trace_id, span_id, sum(hi - lo) AS covered_ms
    FROM (SELECT trace_id, span_id, island, min(s) AS lo, max(e) AS hi FROM islands GROUP BY ALL)
    GROUP BY ALL
)
SELECT x.*, p.service AS parent_service, p.endpoint AS parent_endpoint,
       coalesce(t.depth, 0) AS depth,
       greatest(x.latency_ms - coalesce(c.covered_ms, 0), 0) AS self_time_ms,
       {ENTRY_SPAN_SQL} AS is_entry_span
FROM ctx x
LEFT JOIN parents p ON p.trace_id = x.trace_id AND p.span_id = x.parent_span_id AND x.parent_span_id <> x.span_id
LEFT JOIN tree t ON t.trace_id = x.trace_id AND t.span_id = x.span_id
LEFT JOIN covered c ON c.trace_id = x.trace_id AND c.span_id = x.span_id
"""

TRACE_FLAGS_SQL = """
SELECT e.trace_id,
       bool_or(e.status_code >= 500) AS has_error,
       bool_or(e.is_entry_span AND (e.latency_ms > t.p99 OR e.latency_ms > coalesce(s.sla_ms, 'inf'::DOUBLE)))
           AS is_slow
FROM enriched e LEFT JOIN thresholds t USING (service) LEFT JOIN slas s USING (service)
WHERE e.trace_id IS NOT NULL
GROUP BY e.trace_id
"""

# `trace_fraction` in SQL: the first 8 hex digits of the md5 of the lowercased id over 2^32 (the
# same double: a 32-bit integer over a power of two is exact either way; ids are hex, so
# DuckDB's and Python's lower() agree). tests/test_layers.py checks both forms give one verdict.
TRACE_FRACTION_SQL = "('0x' || md5(lower(trace_id))[1:8])::UBIGINT / 4294967296.0"

# `keep_reason` over a chunk's TRACE_FLAGS rows, in SQL: the kept traces and why (issue 17: the
# per-trace Python hash and loop were ~7% of a batch's layers).
KEPT_SQL = f"""
SELECT trace_id, sample_reason FROM (
    SELECT trace_id,
           CASE WHEN has_error AND u < $error THEN 'error'
                WHEN is_slow AND u < $slow THEN 'slow'
                WHEN u < $normal THEN 'normal' END AS sample_reason
    FROM (SELECT *, {TRACE_FRACTION_SQL} AS u FROM ({TRACE_FLAGS_SQL}))
) WHERE sample_reason IS NOT NULL
"""

ERROR_MESSAGES_SQL = """
SELECT time_bucket(INTERVAL 1 MINUTE, b.timestamp) AS window_start, b.service, coalesce(b.endpoint, '') AS endpoint,
       b.error_message, count(*) AS count,
       arg_min(b.trace_id, (k.trace_id IS NULL, b.timestamp)) AS sample_trace_id
FROM batch b LEFT JOIN kept k USING (trace_id)
WHERE b.error_message IS NOT NULL
GROUP BY ALL
ORDER BY ALL
"""


@dataclass
class BatchLayers:
    silver: pa.Table
    gold: pa.Table
    error_messages: pd.DataFrame
    kept: dict[str, str]  # trace_id -> reason


# DuckDB's Python layer now and then fails a query over a registered Arrow table or frame with
# "Table Function with name python_arrow_scan does not exist" while another thread of the process
# opens or closes a connection (seen ~1 run in 10 of tests/test_layer_queue.py under load, on the
# code before this note too). The same query on a fresh connection then runs: the layers are a pure
# function of their files, so computing them again is safe.
_TRANSIENT_SCAN_ERROR = "python_arrow_scan does not exist"
_COMPUTE_TRIES = 3


def compute_layers(
    batch_files: list[str],
    context: list[str],
    rates: SampleRates,
    slas: dict[str, float] | None = None,
    slack: timedelta = CONTEXT_SLACK,
    window: tuple[datetime, datetime] | None = None,
) -> BatchLayers:
    """`_compute_layers`, computed again (up to `_COMPUTE_TRIES` tries in all) on DuckDB's transient
    scan error (`_TRANSIENT_SCAN_ERROR`); any other error, or the last try's, is raised."""
    for _ in range(_COMPUTE_TRIES - 1):
        try:
            return _compute_layers(batch_files, context, rates, slas, slack, window)
        except duckdb.CatalogException as exc:
            if _TRANSIENT_SCAN_ERROR not in str(exc):
                raise
    return _compute_layers(batch_files, context, rates, slas, slack, window)


def _compute_layers(
    batch_files: list[str],
    context: list[str],
    rates: SampleRates,
    slas: dict[str, float] | None,
    slack: timedelta,
    window: tuple[datetime, datetime] | None,
) -> BatchLayers:
    """Silver rows of the batch's spans, gold rows of its kept traces (whole, from the context
    files), and its error_messages rows. `context` are bronze files holding the rest of the
    batch's traces (the batch's own files are always included); spans more than `slack`
    before or after the batch's are not looked at (row-group statistics skip them), or, with a
    `window` (`context_window`), spans outside it. Silver comes in no particular order
    (`write_silver` sorts each file by time); gold by trace and time."""
    con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "1GB"})
    try:
        table = _load_context(con, batch_files, context, slack, window)
        sla_rows = pd.DataFrame({"service": list((slas or {}).keys()), "sla_ms": list((slas or {}).values())})
        con.register("slas", sla_rows.astype({"service": "object", "sla_ms": "float64"}))
        # the slow class's p99 per service is over the whole batch's entry spans (a row-local flag)
        con.execute(
            """CREATE TEMP TABLE thresholds AS SELECT service, quantile_cont(latency_ms, 0.99) AS p99
                FROM ctx_all WHERE is_entry_span GROUP BY service"""
        )
        con.unregister("ctx_all")
        enriched = _enriched(table)
        del table
        con.register("enriched", enriched)
        con.execute(f"CREATE TEMP TABLE kept AS {KEPT_SQL}", _rate_params(rates))
        kept = dict(con.execute("SELECT trace_id, sample_reason FROM kept").fetchall())
        own = enriched.column("_own")
        silver = enriched if pc.all(own).as_py() is not False else enriched.filter(own)
        silver = silver.select(list(SILVER_COLUMNS))
        cols = ", ".join(SILVER_COLUMNS)
        gold = (
            con.sql(f"SELECT {cols}, k.sample_reason FROM enriched JOIN kept k USING (trace_id)")
            .to_arrow_table()
            .sort_by([("trace_id", "ascending"), ("timestamp", "ascending")])
        )
        con.unregister("enriched")
        del enriched
        errors = con.execute(ERROR_MESSAGES_SQL).df()
        return BatchLayers(silver, gold, errors, kept)
    finally:
        con.close()


def _enriched(table: pa.Table) -> pa.Table:
    """The table with silver's context columns, as ENRICH_SQL defines them, computed over
    arrays (`observability.span_tree`; issue 17: the recursive SQL and its string joins were
    ~2.9 CPU-µs per span, about a fifth of that in arrays). `is_entry_span` came with the load."""
    tree = span_context(
        table.column("trace_id"),
        table.column("span_id"),
        table.column("parent_span_id"),
        pc.cast(table.column("timestamp"), pa.timestamp("us")).cast(pa.int64()).to_numpy(),
        table.column("latency_ms").to_numpy(),
    )
    orphan = tree.parent_row < 0
    parent = pa.array(np.where(orphan, 0, tree.parent_row), mask=orphan)
    for name, values in (
        ("parent_service", table.column("service").take(parent)),
        ("parent_endpoint", table.column("endpoint").take(parent)),
        ("depth", pa.array(tree.depth, pa.int32())),
        ("self_time_ms", pa.array(tree.self_time_ms, pa.float64())),
    ):
        table = table.append_column(name, values)
    return table


def _rate_params(rates: SampleRates) -> dict[str, float]:
    return {"error": float(rates.error), "slow": float(rates.slow), "normal": float(rates.normal)}


def _load_context(
    con,
    batch_files: list[str],
    context: list[str],
    slack: timedelta,
    window: tuple[datetime, datetime] | None = None,
) -> pa.Table:
    """The batch's spans (`_own`) and the rest of their traces, each event once, with their
    `is_entry_span`, as one Arrow table (registered as `ctx_all`); and the temp table `batch`
    (the batch's error rows, for error_messages).

    The batch's spans are held once, in Arrow and not also in a DuckDB table (issue 17: the
    array enrichment reads them from there), and only the other files are scanned for the
    rest of its traces (the batch's files were read twice, and held twice in memory)."""
    entry = f"{ENTRY_SPAN_SQL} AS is_entry_span"  # silver's flag, computed once while loading
    table = con.sql(f"SELECT *, true AS _own, {entry} FROM ({_source(con, batch_files)})").to_arrow_table()
    con.register("ctx_all", table)
    # Each event once. A batch's bronze rarely repeats one (the source drops a producer's
    # retries within its horizon), so look before deduplicating: a DISTINCT ON over every
    # column while loading held a hash table of the whole batch, ~1.7x the table itself
    # (500,000 spans: 305 MB of the driver's RSS against 180, issue 17). A null event_id
    # counts as a repeat here, so DISTINCT ON's one-row-for-all-nulls holds too. Spans
    # without a trace id are kept each row as read (nothing to look up).
    repeats = con.execute(
        "SELECT count(*) - count(DISTINCT event_id) FROM ctx_all WHERE trace_id IS NOT NULL"
    ).fetchall()[0][0]
    if repeats:
        table = con.sql(
            """SELECT DISTINCT ON (event_id) * FROM ctx_all WHERE trace_id IS NOT NULL
               UNION ALL SELECT * FROM ctx_all WHERE trace_id IS NULL"""
        ).to_arrow_table()
        con.register("ctx_all", table)
    # the batch's own rows, each event once, without another scan of its files
    con.execute(
        """CREATE TEMP TABLE batch AS SELECT timestamp, service, endpoint, error_message, trace_id
            FROM ctx_all WHERE error_message IS NOT NULL"""
    )
    own = {str(Path(f).resolve()) for f in batch_files}
    others = sorted({f for f in context if str(Path(f).resolve()) not in own})
    if others:
        if window is None:
            bounds = """timestamp >= (SELECT min(timestamp) FROM ctx_all) - ?
                  AND timestamp <= (SELECT max(timestamp) FROM ctx_all) + ?"""
            params = [slack, slack]
        else:
            bounds, params = "timestamp >= ? AND timestamp <= ?", list(window)
        rest = con.sql(
            f"""SELECT DISTINCT ON (event_id) *, false AS _own, {entry} FROM ({_source(con, others)})
                WHERE {bounds}
                  AND trace_id IN (SELECT trace_id FROM ctx_all WHERE trace_id IS NOT NULL)
                  AND event_id NOT IN (SELECT event_id FROM ctx_all WHERE event_id IS NOT NULL)""",
            params=params,
        ).to_arrow_table()
        if rest.num_rows:
            table = pa.concat_tables([table, rest.cast(table.schema)])
            con.register("ctx_all", table)
    return table


def _partition_value(value: str) -> str:
    return quote(str(value), safe="")


# Low-cardinality columns keep Parquet's dictionary encoding; ids, text and numbers are cheaper
# to write (about half the CPU) and no larger without it (measured on 250,000 spans, issue 17).
_DICTIONARY = ("service", "endpoint", "kind", "parent_service", "parent_endpoint", "error_message", "sample_reason")


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", use_dictionary=[c for c in _DICTIONARY if c in table.column_names])
    tmp.replace(path)  # a reader never sees half a file; a rerun replaces it whole


def write_silver(silver_dir: Path, rows: pa.Table, name: str) -> list[Path]:
    """`date=YYYY-MM-DD/service=NAME/part-<name>.parquet` (the service URL-quoted in the path).

    Each file's rows in time order. Split in Arrow (one sort by service and time, then slices):
    the pandas round trip it replaced cost about as much as computing the layer (issue 17), and
    sorting by the date's text as well cost twice this sort."""
    if rows.num_rows == 0:
        return []
    # Arrow's sort is stable: rows of one service and time keep their order. A service's rows in
    # time order are in date order too, so a (date, service) file is one run of this order.
    sorted_rows = rows.take(pc.sort_indices(rows, [("service", "ascending"), ("timestamp", "ascending")]))
    services = sorted_rows.column("service")
    days = pc.cast(sorted_rows.column("timestamp"), pa.date32())
    service_codes = pc.dictionary_encode(services).combine_chunks().indices.to_numpy(zero_copy_only=False)
    day_codes = pc.fill_null(pc.cast(days, pa.int32()), -1).to_numpy()
    starts = np.flatnonzero(np.r_[True, (service_codes[1:] != service_codes[:-1]) | (day_codes[1:] != day_codes[:-1])])
    files = []
    for start, stop in zip(starts, [*starts[1:], len(day_codes)], strict=True):
        service, day = services[int(start)].as_py(), days[int(start)].as_py()
        if day is None or service is None:  # as pandas' groupby did: no rows of a null key
            continue
        path = (
            Path(silver_dir)
            / f"date={day.isoformat()}"
            / f"service={_partition_value(service)}"
            / f"part-{name}.parquet"
        )
        files.append((sorted_rows.slice(int(start), int(stop - start)), path))
    _write_all(files)
    return [path for _, path in files]


WRITER_THREADS = 2  # Parquet encoding and zstd release the GIL: one file per core


def _write_all(files: list[tuple[pa.Table, Path]]) -> None:
    """Write (rows, path) pairs, two files at a time: a batch's layers are written after its
    commit, and at the end of a backlog (or between micro-batches) nothing else may be using
    the second core (issue 17: the last batch's layers were written on one core)."""
    if len(files) <= 1 or WRITER_THREADS <= 1:
        for rows, path in files:
            _write(rows, path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(WRITER_THREADS, len(files)), thread_name_prefix="layer-writer") as pool:
        for done in [pool.submit(_write, rows, path) for rows, path in files]:
            done.result()  # the first error, after every file was tried


def write_gold(gold_dir: Path, rows: pa.Table, name: str) -> list[Path]:
    """`traces/date=YYYY-MM-DD/part-<name>.parquet`, by the date of each trace's first span."""
    if rows.num_rows == 0:
        return []
    df = rows.to_pandas()
    df["_date"] = df.groupby("trace_id")["timestamp"].transform("min").dt.strftime("%Y-%m-%d")
    out = []
    for date, part in df.groupby("_date", sort=True):
        path = Path(gold_dir) / "traces" / f"date={date}" / f"part-{name}.parquet"
        _write(pa.Table.from_pandas(part.drop(columns="_date"), preserve_index=False).cast(rows.schema), path)
        out.append(path)
    return out


# Around the straddling traces' span in trace_index, for timestamps rounded on the way there.
_WINDOW_PAD = timedelta(seconds=1)


def context_window(settings: Settings, files: list[str]) -> tuple[datetime, datetime] | None:
    """Where in bronze the rest of the batch's traces can be, or None when there is no rest.

    `trace_index` (merged in each batch's commit, before its layers are written) counts every
    trace's spans over all batches. A trace with no more spans there than in this batch is
    whole here and needs no lookup; the others lie within their index rows' start and end.
    So the scan covers those traces' span (usually seconds at a batch boundary) instead of
    CONTEXT_SLACK either side of the batch, which is the fallback when the index lacks one of
    the batch's traces (no index rows yet, or a caller outside the Spark job). Spans of a later
    batch count once it has committed: before, the scan found them if their files were staged
    by then (a race; the later batch's own layers see the whole trace either way).

    Why (issue 17): the slack scan read every span of the 20 minutes around each batch to look
    for its trace ids; in continuous mode that grew through each hour, to ~10 s per batch in
    an hour of 5 s batches on 4 partitions (2,048 bronze files) against ~0.5 s at its start,
    until the layer queue held the job back to its own pace."""
    from observability import tables
    from observability.store import Store

    con = duckdb.connect(":memory:")
    try:
        source = f"read_parquet({_sql_list(files)}, union_by_name=true)"
        start, end = con.execute(f"SELECT min(timestamp), max(timestamp) FROM {source}").fetchall()[0]
        own = con.sql(
            f"SELECT trace_id, count(*) AS spans FROM {source} WHERE trace_id IS NOT NULL GROUP BY trace_id"
        ).to_arrow_table()
    finally:
        con.close()
    if own.num_rows == 0:
        return None
    lo, hi = start - CONTEXT_SLACK, end + CONTEXT_SLACK

    def straddling(c) -> tuple:
        c.register("_own", own)
        try:
            return c.execute(
                f"""SELECT count(*) FILTER (WHERE t.trace_id IS NULL),
                           count(*) FILTER (WHERE t.span_count > o.spans),
                           min(t.start_time) FILTER (WHERE t.span_count > o.spans),
                           max(t.end_time) FILTER (WHERE t.span_count > o.spans)
                    FROM _own o LEFT JOIN (
                        SELECT trace_id, span_count, start_time, end_time FROM {tables.TRACE_INDEX}
                        WHERE end_time >= ? AND start_time <= ?
                    ) t USING (trace_id)""",
                [lo, hi],
            ).fetchall()[0]
        finally:
            c.unregister("_own")

    unknown, split, first, last = Store.from_settings(settings).read(straddling)
    if unknown:
        return lo, hi
    if not split:
        return None
    return max(lo, first - _WINDOW_PAD), min(hi, last + _WINDOW_PAD)


def batch_name(bronze_files: list[str]) -> str:
    """A stable name for a micro-batch's files: the hash of its bronze files (its offset ranges)."""
    return hashlib.sha1("\n".join(sorted(Path(f).name for f in bronze_files)).encode()).hexdigest()[:20]


def write_batch_layers(settings: Settings, bronze_files: list[str]) -> pd.DataFrame:
    """The Spark job's hook: write silver and gold for a micro-batch's bronze files and
    return its error_messages rows (for the layer queue's transaction, spark.layer_queue)."""
    files = [f for f in bronze_files if Path(f).exists()]
    if not files:
        return pd.DataFrame(columns=list(ERROR_MESSAGE_COLUMNS))
    window = context_window(settings, files)
    context = [] if window is None else context_files(settings.bronze_dir, *window)
    layers = compute_layers(files, context, SampleRates.from_settings(settings), settings.service_slas, window=window)
    name = batch_name(files)
    write_silver(settings.silver_dir, layers.silver, name)
    write_gold(settings.gold_dir, layers.gold, name)
    return layers.error_messages


# Tries at writing a committed batch's layers before its `layer_queue` row is left for a person
# (spark.layer_queue writes the queue; the health check reports what is left).
LAYER_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class LayerBacklog:
    pending: int  # committed batches whose layers are still to be written
    oldest: datetime | None  # the oldest such batch's commit
    failed: int  # batches given up on after LAYER_MAX_ATTEMPTS tries
    last_error: str | None  # the newest given-up batch's error


def layer_backlog(store, max_attempts: int = LAYER_MAX_ATTEMPTS) -> LayerBacklog:
    """What `layer_queue` holds: the layer writer's own definition of its backlog (the health
    check's and the Spark job's, which waits for `pending` to reach 0 before an available-now exit)."""
    from observability import tables

    pending, oldest, failed, last_error = store.fetch_one(
        f"""SELECT count(*) FILTER (WHERE attempts < ?), min(queued_at) FILTER (WHERE attempts < ?),
                   count(*) FILTER (WHERE attempts >= ?), arg_max(last_error, queued_at) FILTER (WHERE attempts >= ?)
            FROM {tables.LAYER_QUEUE}""",
        [max_attempts] * 4,
    )
    return LayerBacklog(int(pending), oldest, int(failed), last_error)


def insert_error_messages(con, rows: pd.DataFrame) -> None:
    """Inside the layer queue's transaction: counts add up across micro-batches; the first sample stays."""
    from observability import tables

    if rows is None or rows.empty:
        return
    con.register("_errors", rows[list(ERROR_MESSAGE_COLUMNS)])
    con.execute(
        f"""
        INSERT INTO {tables.ERROR_MESSAGES} ({", ".join(ERROR_MESSAGE_COLUMNS)})
        SELECT * FROM _errors
        ON CONFLICT (window_start, service, endpoint, error_message) DO UPDATE SET
            count = count + excluded.count,
            sample_trace_id = coalesce(sample_trace_id, excluded.sample_trace_id)
        """
    )
    con.unregister("_errors")


# --- reading --------------------------------------------------------------------------
def _days(start: datetime, end: datetime) -> list[str]:
    d, out = start.date(), []
    while d <= end.date():
        out.append(f"{d:%Y-%m-%d}")
        d += timedelta(days=1)
    return out


def silver_files(silver_dir: Path, start: datetime, end: datetime, service: str | None = None) -> list[str]:
    svc = f"service={_partition_value(service)}" if service else "service=*"
    return sorted(str(f) for day in _days(start, end) for f in Path(silver_dir).glob(f"date={day}/{svc}/*.parquet"))


def gold_files(gold_dir: Path, start: datetime, end: datetime) -> list[str]:
    return sorted(
        str(f) for day in _days(start, end) for f in (Path(gold_dir) / "traces").glob(f"date={day}/*.parquet")
    )


def _read(files: list[str], columns: tuple[str, ...], where: str, params: list) -> pd.DataFrame:
    if not files:
        return pd.DataFrame(columns=list(columns))
    con = duckdb.connect(":memory:")
    try:
        sql = f"SELECT DISTINCT ON (event_id) {', '.join(columns)} FROM read_parquet(?, union_by_name=true)"
        if where:
            sql += f" WHERE {where}"
        return con.execute(f"SELECT * FROM ({sql}) ORDER BY timestamp", [files, *params]).df()
    finally:
        con.close()


def read_silver(silver_dir: Path, start: datetime, end: datetime, service: str | None = None) -> pd.DataFrame:
    """Silver spans with start <= timestamp < end (optionally of one service)."""
    return _read(
        silver_files(silver_dir, start, end, service), SILVER_COLUMNS, "timestamp >= ? AND timestamp < ?", [start, end]
    )


def read_gold_trace(
    gold_dir: Path, trace_id: str, around: datetime, slack: timedelta = timedelta(days=1)
) -> pd.DataFrame:
    """All spans of one gold-sampled trace (each once), or an empty frame when it was not kept."""
    return _read(gold_files(gold_dir, around - slack, around + slack), GOLD_COLUMNS, "trace_id = ?", [trace_id.lower()])


def error_path(spans: pd.DataFrame, span_id: str) -> list[str] | None:
    """Span ids from the trace's root down to `span_id` (the error path), or None when a
    link is missing (the path cannot be rebuilt from these spans)."""
    parent = dict(zip(spans["span_id"], spans["parent_span_id"], strict=True))
    if span_id not in parent:
        return None
    path = [span_id]
    while (p := parent.get(path[-1])) is not None and not pd.isna(p):
        if p not in parent or p in path:
            return None
        path.append(p)
    return path[::-1]


# --- retention ------------------------------------------------------------------------
def expired_date_partitions(root: Path, cutoff: datetime) -> list[Path]:
    """`date=YYYY-MM-DD` folders under root whose whole day ended by the cutoff."""
    out = []
    for d in sorted(Path(root).glob("date=*")):
        try:
            day = datetime.strptime(d.name[5:], "%Y-%m-%d")
        except ValueError:
            continue
        if day + timedelta(days=1) <= cutoff:
            out.append(d)
    return out


def drop_date_partitions(root: Path, cutoff: datetime) -> int:
    dropped = expired_date_partitions(root, cutoff)
    for d in dropped:
        shutil.rmtree(d, ignore_errors=True)
    return len(dropped)
