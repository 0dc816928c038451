"""Per-range side outputs, computed where a range is parsed: trace samples, call edges, window counts.

They run in the source's Python worker with DuckDB over the range's Arrow
table, right after the single parse, instead of as extra Spark jobs per batch
(measured: ~30 us of JVM CPU per event for the two shuffles and a join, vs
~2 us here). Every rule is exact across ranges:

- the producers key events by trace id, so a trace's spans share one topic
  partition, hence one range of a micro-batch: the parent/child join of a
  batch is the union of the per-range joins;
- a per-(window, service) top-k is contained in the union of the per-range
  top-k candidates, so each range ships its candidates with a sort key and
  the sink keeps the k best per window (across batches, too).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

WINDOW_MS = 60_000
ERROR_SAMPLE_CAP = 20  # every error trace of a (window, service), up to this many (earliest first)
SLOW_SAMPLE_COUNT = 5  # the slowest few non-error traces
NORMAL_SAMPLE_PERCENT = 1  # a deterministic, hash-based share of the other traces...
NORMAL_SAMPLE_CAP = 10  # ...up to this many
SAMPLE_CAPS = {"error": ERROR_SAMPLE_CAP, "slow": SLOW_SAMPLE_COUNT, "normal": NORMAL_SAMPLE_CAP}

SAMPLE_COLUMNS = ("window_start_ms", "service", "trace_id", "reason", "sort_key")
EDGE_COLUMNS = ("window_start_ms", "parent_service", "child_service", "call_count", "error_count")
WINDOW_COUNT_COLUMNS = ("window_start_ms", "rows")


# md5_number(trace_id) % 10000, the trace's sampling bucket, computed from the hash's two 64-bit
# halves: (hi * 2^64 + lo) mod m = ((hi mod m) * (2^64 mod m) + lo mod m) mod m. The same number,
# ~20x cheaper than DuckDB's 128-bit modulo (which was most of this module's CPU); 2^64 mod 10000
# is 1616 (tests/test_spark_vector_parse.py checks the two forms agree).
_BUCKET = (
    "((((md5_number(trace_id) >> 64)::UBIGINT % 10000) * 1616"
    " + (md5_number(trace_id) & 18446744073709551615::UHUGEINT)::UBIGINT % 10000) % 10000)"
)


def _connect() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "512MB"})


def trace_sample_candidates(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Candidates per (window, service): reason and a sort key (smaller = kept first).

    error: traces with a span of the service at status >= 500, earliest first;
    slow: other traces by the service's slowest span, slowest first;
    normal: other traces whose md5 bucket falls in the sampled share, lowest bucket first.
    """
    return con.execute(
        f"""
        WITH per_trace AS (
            SELECT (epoch_ms(timestamp) // {WINDOW_MS}) * {WINDOW_MS} AS window_start_ms, service, trace_id,
                   bool_or(status_code >= 500) AS has_error,
                   max(latency_ms) AS max_latency,
                   min(epoch_ms(timestamp)) AS first_seen_ms,
                   {_BUCKET} AS bucket
            FROM ev WHERE trace_id IS NOT NULL
            GROUP BY ALL
        ),
        candidates AS (
            (SELECT window_start_ms, service, trace_id, 'error' AS reason, 0 AS priority, first_seen_ms::DOUBLE AS sort_key
             FROM per_trace WHERE has_error
             QUALIFY row_number() OVER (PARTITION BY window_start_ms, service ORDER BY first_seen_ms, trace_id)
                     <= {ERROR_SAMPLE_CAP})
            UNION ALL
            (SELECT window_start_ms, service, trace_id, 'slow', 1, -max_latency
             FROM per_trace WHERE NOT has_error
             QUALIFY row_number() OVER (PARTITION BY window_start_ms, service ORDER BY max_latency DESC, trace_id)
                     <= {SLOW_SAMPLE_COUNT})
            UNION ALL
            (SELECT window_start_ms, service, trace_id, 'normal', 2, bucket::DOUBLE
             FROM per_trace WHERE NOT has_error AND bucket < {NORMAL_SAMPLE_PERCENT * 100}
             QUALIFY row_number() OVER (PARTITION BY window_start_ms, service ORDER BY bucket, trace_id)
                     <= {NORMAL_SAMPLE_CAP + SLOW_SAMPLE_COUNT})
        )
        SELECT window_start_ms, service, trace_id, reason, sort_key FROM candidates
        QUALIFY row_number() OVER (PARTITION BY window_start_ms, service, trace_id ORDER BY priority) = 1
        ORDER BY ALL
        """
    ).fetchall()


# A CLIENT span calling a database names it in these attributes (the stable
# semantic conventions' name first, then the older one): the callee of its edge.
DB_SYSTEM_ATTRIBUTES = ("db.system.name", "db.system")


def dependency_edges(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Caller -> callee calls, status >= 500 counting as an erroring call:

    - a child span (parent_span_id = parent's span_id, same trace) of another
      service; the edge's window is the child span's;
    - a CLIENT span with a `db.system` attribute: a call from its service to
      that database system (the callee is the attribute's value, e.g.
      `postgresql`), in the client span's window.
    """
    db_system = (
        "coalesce(" + ", ".join(f"json_extract_string(attributes, '$.\"{a}\"')" for a in DB_SYSTEM_ATTRIBUTES) + ")"
    )
    return con.execute(
        f"""
        WITH parents AS (
            SELECT DISTINCT ON (trace_id, span_id) trace_id, span_id, service
            FROM ev WHERE trace_id IS NOT NULL AND span_id IS NOT NULL
        ),
        calls AS (
            SELECT c.timestamp, p.service AS parent_service, c.service AS child_service, c.status_code
            FROM ev c JOIN parents p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
            UNION ALL
            SELECT timestamp, service, {db_system}, status_code
            FROM ev WHERE kind = 'client' AND attributes IS NOT NULL
        )
        SELECT (epoch_ms(timestamp) // {WINDOW_MS}) * {WINDOW_MS} AS window_start_ms, parent_service, child_service,
               count(*) AS call_count, count(*) FILTER (WHERE status_code >= 500) AS error_count
        FROM calls
        WHERE child_service IS NOT NULL AND parent_service <> child_service
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()


def window_counts(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Valid rows per 1-minute window: the sink counts the late ones against the watermark."""
    return con.execute(
        f"SELECT (epoch_ms(timestamp) // {WINDOW_MS}) * {WINDOW_MS} AS w, count(*) FROM ev GROUP BY 1 ORDER BY 1"
    ).fetchall()


def compute(valid: pa.Table) -> dict:
    """All side outputs of one range's valid events (bronze columns): lists of rows, and the
    trace-index partials as an Arrow table (None for no rows)."""
    from spark import trace_index

    if valid.num_rows == 0:
        return {"samples": [], "edges": [], "window_counts": [], "traces": None}
    con = _connect()
    try:
        con.register("ev", valid)
        return {
            "samples": [list(r) for r in trace_sample_candidates(con)],
            "edges": [list(r) for r in dependency_edges(con)],
            "window_counts": [list(r) for r in window_counts(con)],
            "traces": trace_index.partials(con),
        }
    finally:
        con.close()


def late_rows(window_counts: list, late_watermark_ms: int) -> int:
    """Rows whose window ended at or before the watermark: too late to refine a window
    (Spark's aggregation drops the entry spans among them; the others it never counts)."""
    return sum(int(n) for w, n in window_counts if int(w) + WINDOW_MS <= late_watermark_ms)
