"""Benchmark: what one continuous-mode micro-batch costs as its data accumulates (issue 17).

    .venv/bin/python bench/bench_batch_growth.py [--rate 10000] [--trigger 5] [--partitions 4] [--index-traces N]
                                                 [--minutes 5,20,50] [--sample-days 7] [--keep]

Short benches start on empty data; a job that runs for days does not. Two such costs:

1. The layers' context as the hour partition fills. The layer queue writes silver and gold for
   each committed micro-batch, and looks in bronze for the rest of the batch's traces
   (`observability.layers.write_batch_layers`). This builds what a continuous job at `--rate`
   events/s with a `--trigger` s trigger on `--partitions` partitions leaves in one hour
   partition after each of `--minutes` minutes: one bronze file per partition per batch, full
   rate for the last CONTEXT_SLACK (10 minutes; older files hold a few rows each: outside the
   slack only their footers are read), traces of 7 spans numbered through each partition, so
   one trace per partition straddles every batch boundary, and `trace_index` as the job's
   commits leave it. It times the layers of the newest batch, CPU seconds:
   - now: `write_batch_layers` (trace_index says which traces have spans elsewhere, and where),
     a process's first call (bronze footers not yet cached) and a second;
   - the same-run baseline: the code before, the whole hour partition as context and a scan of
     CONTEXT_SLACK either side of the batch for its traces (`compute_layers` without a window),
     plus the same file writes. Both produce the same layers; the script checks the silver rows
     and the kept traces are equal.
2. The sink's trace-sample cap as `trace_samples` fills over `--sample-days` (10 services, 35
   samples per window and service: ~3.5M rows in 7 days): one batch's samples kept within
   each reason's cap (`spark.sink.DuckDBSink._insert_samples`, in a real DuckDB file, the
   write's connection included), beside the same batch on an empty table (same run).
3. The sink's trace-index merge as `trace_index` fills (`--index-traces` rows: at 50,000
   spans/s of 8-span traces, 2M rows is about five minutes): one 500,000-span batch's 62,500
   new traces merged in their own write transaction (`spark.trace_index.upsert`, connection
   and checkpoint included), beside the same merge on an empty table (same run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

HOUR = datetime(2026, 3, 2, 10)
TRACE_SPANS = 7
SERVICES = ("gateway", "checkout", "payments", "inventory", "search")


def batch_rows(con, partition: int, batch: int, rows: int, trigger: float, count: int | None = None) -> pa.Table:
    """The first `count` (default all `rows`) of one partition's spans of one batch, in bronze
    columns; span numbers run on across batches, so each batch boundary splits a trace."""
    first = batch * rows
    return con.sql(
        f"""
        SELECT md5(format('{{}}-{{}}', {partition}, n)) AS event_id,
               CAST(TIMESTAMP '{HOUR:%Y-%m-%d %H:%M:%S}' + to_milliseconds(CAST(
                   ({batch} + (n - {first}) / {rows}) * {trigger * 1000} AS BIGINT)) AS TIMESTAMP_MS) AS timestamp,
               list_extract({list(SERVICES)}, CAST(n % {len(SERVICES)} + 1 AS INTEGER)) AS service,
               '/op' AS endpoint, CAST(CASE WHEN n % 97 = 0 THEN 500 ELSE 200 END AS INTEGER) AS status_code,
               CAST(5 + n % 40 AS DOUBLE) AS latency_ms,
               md5(format('{{}}-{{}}', {partition}, n // {TRACE_SPANS})) AS trace_id,
               md5(format('s-{{}}-{{}}', {partition}, n)) AS span_id,
               CASE WHEN n % {TRACE_SPANS} = 0 THEN NULL
                    ELSE md5(format('s-{{}}-{{}}', {partition}, n - 1)) END AS parent_span_id,
               'server' AS kind, CASE WHEN n % 97 = 0 THEN 'boom' END AS error_message,
               CAST(NULL AS VARCHAR) AS attributes
        FROM range({first}, {first + (rows if count is None else count)}) t(n)
        """
    ).to_arrow_table()


def build_hour(data_dir: Path, rate: int, trigger: float, partitions: int, minutes: float) -> list[str]:
    """Bronze files and trace_index of `minutes` of a continuous job; the newest batch's files."""
    from observability.bronze import BRONZE_COLUMNS
    from observability.settings import Settings
    from observability.store import Store, utcnow
    from spark import side_outputs, trace_index

    settings = Settings(DATA_DIR=str(data_dir), TRANSPORT="local")
    store = Store(settings.duckdb_path)
    store.migrate()
    hour_dir = settings.bronze_dir / f"date={HOUR:%Y-%m-%d}" / f"hour={HOUR:%H}"
    hour_dir.mkdir(parents=True, exist_ok=True)
    batches = int(minutes * 60 / trigger)
    full_from = max(0, batches - int(600 / trigger))  # the last CONTEXT_SLACK at full rate
    rows = int(rate * trigger / partitions)
    con = duckdb.connect()
    newest: list[str] = []
    for b in range(batches):
        parts = []
        for p in range(partitions):
            count = 10 if b < full_from else None  # outside the slack only the footers are read
            table = batch_rows(con, p, b, rows, trigger, count).select(list(BRONZE_COLUMNS))
            path = hour_dir / f"part-raw_events-p{p}-{b * rows:012d}-{(b + 1) * rows:012d}.parquet"
            pq.write_table(table, path, compression="zstd")
            parts.append(table)
            if b == batches - 1:
                newest.append(str(path))
        if b >= full_from:
            partials = side_outputs.compute(pa.concat_tables(parts))["traces"]
            store.write(lambda c, t=partials: trace_index.upsert(c, t, utcnow()))
    con.close()
    return newest


def cpu(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def measure(data_dir: Path, files: list[str]) -> dict:
    from observability import layers
    from observability.settings import Settings

    settings = Settings(DATA_DIR=str(data_dir), TRANSPORT="local")
    rates = layers.SampleRates.from_settings(settings)
    hour = sorted(str(f) for f in Path(files[0]).parent.glob("*.parquet"))

    def before():
        got = layers.compute_layers(files, hour, rates, settings.service_slas)  # the whole hour, slack scan
        name = layers.batch_name(files)
        layers.write_silver(settings.silver_dir, got.silver, name)
        layers.write_gold(settings.gold_dir, got.gold, name)
        return got

    window = layers.context_window(settings, files)
    layers._FILE_SPANS.clear()
    cold, _ = cpu(lambda: layers.write_batch_layers(settings, files))
    warm, _ = cpu(lambda: layers.write_batch_layers(settings, files))
    narrow = layers.compute_layers(
        files, layers.context_files(settings.bronze_dir, *window), rates, settings.service_slas, window=window
    )
    base, wide = cpu(before)

    def canon(t):
        return t.to_pandas().sort_values("event_id").reset_index(drop=True)

    same = canon(narrow.silver).equals(canon(wide.silver)) and narrow.kept == wide.kept
    return {"files": len(hour), "cold": cold, "warm": warm, "before": base, "window": window, "same": same}


def sample_cap_cpu(path: Path, days: int, batches: int = 5) -> float:
    """Median CPU seconds of one batch's trace-sample insert (200 samples of one window) on a
    DuckDB file holding `days` of samples before it (10 services, 35 per window and service)."""
    import statistics
    from datetime import timedelta

    import pandas as pd

    from observability import tables
    from observability.store import Store
    from spark.side_outputs import SAMPLE_CAPS
    from spark.sink import DuckDBSink

    store = Store(path)
    store.migrate()
    minutes = days * 24 * 60
    if minutes:
        store.write(
            lambda c: c.execute(
                f"""INSERT INTO {tables.TRACE_SAMPLES} (window_start, service, trace_id, reason)
                    SELECT TIMESTAMP '{HOUR:%Y-%m-%d %H:%M:%S}' + to_minutes(w), 'svc' || s,
                           md5(format('{{}}-{{}}-{{}}', w, s, k)), 'normal'
                    FROM range({minutes}) a(w), range(10) b(s), range(35) c(k)"""
            )
        )
    sink = DuckDBSink(store, "bench", SAMPLE_CAPS)
    spent = []
    for b in range(batches):
        window = HOUR + timedelta(minutes=minutes + b)
        samples = pd.DataFrame(
            {
                "window_start": [window] * 200,
                "service": [f"svc{k % 10}" for k in range(200)],
                "trace_id": [f"{b:08x}{k:024x}" for k in range(200)],
                "reason": ["normal"] * 200,
                "sort_key": [float(k) for k in range(200)],
            }
        )
        t = time.process_time()
        store.write(lambda c, s=samples: sink._insert_samples(c, s))
        spent.append(time.process_time() - t)
    return statistics.median(spent)


def trace_index_cpu(path: Path, traces_before: int, traces: int = 62_500, batches: int = 3) -> float:
    """Median CPU seconds of one batch's trace_index merge (`spark.trace_index.upsert`, `traces`
    new traces: a 500,000-span batch of 8-span traces) in its own write transaction, on a DuckDB
    file already holding `traces_before` rows (filled by the same merge, `traces` at a time)."""
    import statistics
    from datetime import UTC, datetime

    import numpy as np

    from observability.store import Store
    from spark import trace_index

    store = Store(path)
    store.migrate()

    def partial(batch: int) -> pa.Table:
        start = 1_760_000_000_000_000 + batch * 10_000_000 + np.arange(traces) * 100
        return pa.table(
            {
                "trace_id": pa.array([f"{batch * traces + i:032x}" for i in range(traces)]),
                "start_us": pa.array(start),
                "end_us": pa.array(start + 50_000),
                "root_service": pa.array(["gateway"] * traces),
                "root_endpoint": pa.array(["/api/checkout"] * traces),
                "root_span_id": pa.array([f"{i:016x}" for i in range(traces)]),
                "span_count": pa.array(np.full(traces, 8)),
                "error_count": pa.array(np.zeros(traces, np.int64)),
                "services": pa.array([["cart", "gateway", "payments"]] * traces, pa.list_(pa.string())),
            },
            schema=trace_index.PARTIAL_ARROW_SCHEMA,
        )

    now = datetime.now(UTC).replace(tzinfo=None)
    filled = traces_before // traces
    for b in range(filled):
        store.write(lambda c, t=partial(b): trace_index.upsert(c, t, now))
    spent = []
    for b in range(filled, filled + batches):
        t = partial(b)
        c = time.process_time()
        store.write(lambda con, t=t: trace_index.upsert(con, t, now))
        spent.append(time.process_time() - c)
    return statistics.median(spent)


def grown_and_empty(measure_cpu, size: int, keep: bool) -> tuple[float, float]:
    """`measure_cpu(path, size)` on a DuckDB file filled to `size`, and the same on an empty one
    (the same-run baseline), each in a scratch directory."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_growth_"))
    try:
        return measure_cpu(tmp / "grown.duckdb", size), measure_cpu(tmp / "empty.duckdb", 0)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--trigger", type=float, default=5.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--minutes", default="5,20,50", help="minutes into the hour to time a batch at")
    parser.add_argument("--sample-days", type=int, default=7, help="days of trace_samples before the sink's batch")
    parser.add_argument(
        "--index-traces", type=int, default=2_000_000, help="trace_index rows before the merge's batch (0: skip)"
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"== one micro-batch's layers in continuous mode: {args.rate:,} events/s, {args.trigger:g} s trigger, "
        f"{args.partitions} partitions =="
    )
    ok = True
    for minutes in (float(m) for m in args.minutes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="bench_batch_growth_"))
        try:
            files = build_hour(tmp, args.rate, args.trigger, args.partitions, minutes)
            r = measure(tmp, files)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        lo, hi = r["window"] or (None, None)
        span = f"{(hi - lo).total_seconds():.1f} s of bronze looked at" if lo else "no lookup"
        print(
            f"minute {minutes:g}: {r['files']:,} bronze files in the hour; layers of the newest batch: "
            f"{r['warm']:.2f} CPU-s ({r['cold']:.2f} on a process's first batch; {span}) "
            f"vs {r['before']:.2f} CPU-s scanning {timedelta(minutes=10).seconds // 60} minutes either side "
            f"(before, same run); same silver and kept traces: {'yes' if r['same'] else 'NO'}"
        )
        ok = ok and r["same"]
    full, empty = grown_and_empty(sample_cap_cpu, args.sample_days, args.keep)
    print(
        f"sink: one batch's trace samples kept within their caps after {args.sample_days} days of trace_samples "
        f"(10 services): {full:.3f} CPU-s vs {empty:.3f} on an empty table (same run)"
    )
    if args.index_traces:
        grown, fresh = grown_and_empty(trace_index_cpu, args.index_traces, args.keep)
        print(
            f"sink: one 500,000-span batch's trace_index merge (62,500 new traces) on {args.index_traces:,} rows: "
            f"{grown:.3f} CPU-s vs {fresh:.3f} on an empty table (same run)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
