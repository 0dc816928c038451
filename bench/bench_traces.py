"""Trace search over a week: p95 of the traces page's searches on `trace_index`, beside the
same searches answered from the bronze spans.

Generates DAYS x SPANS_PER_DAY spans (default 7 x 1,000,000, ~7 spans a trace) as bronze
Parquet in the job's `date=/hour=` layout, builds `trace_index` from them with the job's
own SQL (`spark.trace_index`: per-day partial rows merged by the sink's upsert), then
times each search as the page runs it (`dashboard.trace_queries.search_traces`, one
short read-only connection per query through `Store`). Baseline, same run: the same
filters as a GROUP BY over the bronze spans of the 7 days. Goal: p95 under 1 s.

    .venv/bin/python bench/bench_traces.py [--days 7] [--spans-per-day 1000000] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LOG_LEVEL", "WARNING")

import duckdb  # noqa: E402
from goals import goal_line  # noqa: E402  (bench/ is on sys.path when run as a script)

from dashboard import trace_queries  # noqa: E402
from dashboard.trace_queries import TraceSearch  # noqa: E402
from observability.store import Store, utcnow  # noqa: E402
from spark import trace_index  # noqa: E402

GOAL_SECONDS = 1.0
SPANS_PER_TRACE = 7
SERVICES = [f"svc-{i:02d}" for i in range(20)]
ENDPOINTS = ["/api/cart", "/api/pay", "/api/search", "/api/items", "/api/login"]


def generate_bronze(bronze: Path, start: datetime, days: int, spans_per_day: int) -> int:
    """Spans straight from DuckDB into hour-partitioned Parquet (no Python rows)."""
    total = days * spans_per_day
    traces = total // SPANS_PER_TRACE
    step_us = days * 86_400_000_000 // traces
    services = "[" + ", ".join(f"'{s}'" for s in SERVICES) + "]"
    endpoints = "[" + ", ".join(f"'{e}'" for e in ENDPOINTS) + "]"
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"""
        COPY (
            SELECT *, strftime(timestamp, '%Y-%m-%d') AS date, strftime(timestamp, '%H') AS hour FROM (
                WITH s AS (
                    SELECT i // {SPANS_PER_TRACE} AS t, i % {SPANS_PER_TRACE} AS k, i,
                           hash(i // {SPANS_PER_TRACE}) AS h
                    FROM range({traces * SPANS_PER_TRACE}) r(i)
                )
                SELECT md5(i::VARCHAR) AS event_id,
                       make_timestamp(epoch_us(TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}') + t * {step_us} + k * 2000)
                           AS timestamp,
                       {services}[1 + ((h + k) % {len(SERVICES)})::INT] AS service,
                       {endpoints}[1 + ((h // 7 + k) % {len(ENDPOINTS)})::INT] AS endpoint,
                       CASE WHEN (h // 13 + k) % 100 = 0 THEN 503 ELSE 200 END AS status_code,
                       (5 + (hash(i) % 400) * (CASE WHEN k = 0 THEN 3 ELSE 1 END))::DOUBLE AS latency_ms,
                       md5(t::VARCHAR) AS trace_id,
                       left(md5(i::VARCHAR || 's'), 16) AS span_id,
                       CASE WHEN k = 0 THEN NULL ELSE left(md5((i - 1)::VARCHAR || 's'), 16) END AS parent_span_id,
                       'server' AS kind,
                       CASE WHEN (h // 13 + k) % 100 = 0 THEN 'upstream timeout' END AS error_message,
                       '{{"region": "' || CASE WHEN h % 2 = 0 THEN 'eu' ELSE 'us' END || '"}}' AS attributes
                FROM s
            )
        ) TO '{bronze}' (FORMAT parquet, PARTITION_BY (date, hour), OVERWRITE_OR_IGNORE)
        """
    )
    con.close()
    return traces * SPANS_PER_TRACE


def build_index(store: Store, bronze: Path) -> int:
    """trace_index from the spans, a date partition at a time: the job's partial SQL, the sink's upsert
    (a trace that crosses midnight is merged from two partial rows)."""
    for day in sorted(bronze.glob("date=*")):
        files = str(day / "*" / "*.parquet")
        con = duckdb.connect()
        con.execute(f"CREATE VIEW ev AS SELECT * FROM read_parquet('{files}', hive_partitioning = false)")
        partial = con.execute(trace_index.PARTIAL_SQL).df()
        con.close()

        def work(c, partial=partial):
            trace_index.upsert(c, partial, utcnow())

        store.write(work)
    return int(store.fetch_one("SELECT count(*) FROM trace_index")[0])


SEARCHES = {
    "newest 200": TraceSearch(),
    "service": TraceSearch(service="svc-07"),
    "errors only": TraceSearch(errors_only=True),
    "min duration 1100 ms": TraceSearch(min_duration_ms=1100),
    "service + errors + min 300 ms": TraceSearch(service="svc-03", errors_only=True, min_duration_ms=300),
    "root endpoint contains": TraceSearch(endpoint="pay"),
}


def bronze_search_sql(search: TraceSearch, files: str) -> tuple[str, list]:
    """The baseline: the same search answered from the spans (GROUP BY trace over bronze)."""
    having, params = [], []
    if search.service:
        having.append("list_contains(list(service), ?)")
        params.append(search.service)
    if search.endpoint:
        having.append("arg_min(endpoint, (parent_span_id IS NOT NULL, timestamp)) ILIKE ?")
        params.append(f"%{search.endpoint}%")
    if search.errors_only:
        having.append("count(*) FILTER (WHERE status_code >= 500) > 0")
    if search.min_duration_ms:
        having.append(
            "(max(epoch_us(timestamp) + CAST(latency_ms * 1000 AS BIGINT)) - min(epoch_us(timestamp))) / 1000.0 >= ?"
        )
        params.append(search.min_duration_ms)
    sql = f"""
        SELECT trace_id, min(timestamp) AS start_time, count(*) AS span_count
        FROM read_parquet('{files}', hive_partitioning = false)
        GROUP BY trace_id {"HAVING " + " AND ".join(having) if having else ""}
        ORDER BY start_time DESC LIMIT {trace_queries.MAX_RESULTS}
    """
    return sql, params


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def timed(fn) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--spans-per-day", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20, help="timed runs of each index search")
    ap.add_argument("--baseline-runs", type=int, default=3, help="timed runs of each bronze search")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-traces-") as tmp:
        bronze = Path(tmp) / "bronze"
        store = Store(Path(tmp) / "bench.duckdb")
        store.migrate()
        end = utcnow().replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        w, c, spans = timed(lambda: generate_bronze(bronze, start, args.days, args.spans_per_day))
        print(f"bronze: {spans:,} spans over {args.days} days in {w:.1f} s")
        w, c, traces = timed(lambda: build_index(store, bronze))
        size = (Path(tmp) / "bench.duckdb").stat().st_size
        print(f"trace_index: {traces:,} traces in {w:.1f} s ({c:.1f} s CPU here), database {size / 2**20:.0f} MiB")
        files = str(bronze / "*" / "*" / "*.parquet")
        results = {}
        print(
            f"{f'search ({args.days} days)':32} {'index p50':>10} {'index p95':>10} {'rows':>5} {'bronze p50':>11} {'x':>6}"
        )
        for name, search in SEARCHES.items():
            walls, cpus = [], []
            for _ in range(args.runs):
                w, c, rows = timed(lambda s=search: trace_queries.search_traces(store, bronze, s, start, end))
                walls.append(w)
                cpus.append(c)
            base = []
            sql, params = bronze_search_sql(search, files)
            for _ in range(args.baseline_runs):
                w, _, base_rows = timed(lambda sql=sql, params=params: duckdb.connect().execute(sql, params).df())
                base.append(w)
            assert list(rows["trace_id"])[:20] == list(base_rows["trace_id"])[:20], name  # same answer
            results[name] = {
                "index_p50_s": statistics.median(walls),
                "index_p95_s": p95(walls),
                "index_cpu_median_s": statistics.median(cpus),
                "rows": len(rows),
                "bronze_p50_s": statistics.median(base),
            }
            r = results[name]
            print(
                f"{name:32} {r['index_p50_s']:>9.3f}s {r['index_p95_s']:>9.3f}s {r['rows']:>5} "
                f"{r['bronze_p50_s']:>10.2f}s {r['bronze_p50_s'] / r['index_p50_s']:>5.0f}x"
            )
        # the attribute filter reads bronze for trace ids, then the index
        for hours in (1, 24):
            w, c, rows = timed(
                lambda h=hours: trace_queries.search_traces(
                    store, bronze, TraceSearch(attribute="region=eu"), end - timedelta(hours=h), end
                )
            )
            results[f"attribute region=eu, last {hours} h"] = {"wall_s": w, "cpu_s": c, "rows": len(rows)}
            print(f"attribute region=eu over the last {hours} h (bronze ids + index): {w:.3f} s, {len(rows)} rows")
        worst = max(r["index_p95_s"] for r in results.values() if "index_p95_s" in r)
        verdict = "PASS" if worst < GOAL_SECONDS else "FAIL"
        print(f"worst index search p95 {worst:.3f} s (goal < {GOAL_SECONDS:.0f} s): {verdict}; load average {load:.1f}")
        name, r = max(((k, v) for k, v in results.items() if "index_p95_s" in v), key=lambda kv: kv[1]["index_p95_s"])
        goal_line(
            f"trace search, {args.days} days x {args.spans_per_day:,} spans/day ({traces:,} traces), worst p95",
            f"{r['index_p95_s']:.3f} s ({name}; CPU median {r['index_cpu_median_s']:.3f} s; load {load:.1f})",
            f"p95 < {GOAL_SECONDS:.0f} s",
            f"same search over the bronze spans p50 {r['bronze_p50_s']:.2f} s",
            worst < GOAL_SECONDS,
        )
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "traces.json").write_text(
            json.dumps({"spans": spans, "traces": traces, "load": load, "searches": results}, indent=2)
        )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
