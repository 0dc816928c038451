"""Benchmark of the bronze / silver / gold layers on a generated day with incidents.

    .venv/bin/python bench/bench_layers.py [--spans 300000] [--keep]

1. generates a day of traces (gateway -> checkout -> payments/inventory,
   gateway -> search -> inventory) with three incidents (payments failing, a
   third of its calls), writes bronze (`observability.bronze.write_events`),
   then silver and gold hour by hour with the Spark job's own hook
   (`observability.layers.write_batch_layers`, context from bronze) and the
   aggregates the job would write (service_metrics, endpoint_metrics,
   error_messages) into a real DuckDB file;
2. prints the bytes of each layer;
3. the share of incident error paths (root span -> failing span, every
   failing span inside an incident) that can be rebuilt from gold alone and
   from gold plus silver (goal 100 %);
4. times three questions on gold against the same question on bronze, the
   same-run baseline: "error rate last hour", "top failing endpoints" (the
   day) and "rebuild trace X" (an incident's sample trace), as the median of
   a few runs, wall and CPU (time.process_time, all of DuckDB's threads)
   milliseconds; both sides on a held in-process DuckDB connection.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402
from goals import goal_line  # noqa: E402  (bench/ is on sys.path when run as a script)

DAY = datetime(2026, 3, 2)
INCIDENTS = [(DAY + timedelta(hours=h), timedelta(minutes=20)) for h in (3, 11, 19)]
CALLS = {"gateway": ("checkout", "search"), "checkout": ("payments", "inventory"), "search": ("inventory",)}
ENDPOINTS = {
    "gateway": ("/api/cart", "/api/search", "/api/pay"),
    "checkout": ("/checkout",),
    "payments": ("/charge",),
    "search": ("/query",),
    "inventory": ("/stock",),
}
REPEATS = 5


def in_incident(t: datetime) -> bool:
    return any(start <= t < start + span for start, span in INCIDENTS)


def generate_day(n_spans: int, seed: int = 1) -> pd.DataFrame:
    """About n_spans spans over DAY; payments fails a third of its calls in incidents, 0.5 % otherwise."""
    rng = random.Random(seed)
    rows: list[tuple] = []

    def span(trace: str, parent: str | None, service: str, t: datetime, incident: bool) -> tuple[float, bool]:
        sid = f"{rng.getrandbits(64):016x}"
        children_ms = 0.0
        child_t = t + timedelta(milliseconds=1)
        failed_child = False
        for child in CALLS.get(service, ()):
            if rng.random() < 0.9:
                took, child_failed = span(trace, sid, child, child_t, incident)
                child_t += timedelta(milliseconds=took)  # sequential calls
                children_ms += took
                failed_child |= child_failed
        fail = service == "payments" and rng.random() < (0.33 if incident else 0.005)
        status = 500 if fail or failed_child else 200
        latency = children_ms + rng.lognormvariate(2.5, 0.5) * (4 if fail else 1) + 1
        error = "card processor timeout after 3 retries" if fail else ("upstream failed" if failed_child else None)
        rows.append(
            (
                f"{rng.getrandbits(128):032x}",
                t,
                service,
                rng.choice(ENDPOINTS[service]),
                status,
                round(latency, 3),
                trace,
                sid,
                parent,
                "server",
                error,
                None,
            )
        )
        return latency, status >= 500

    seconds = 86_400
    traces = n_spans // 5
    for i in range(traces):
        t = DAY + timedelta(seconds=seconds * i / traces + rng.random())
        span(f"{rng.getrandbits(128):032x}", None, "gateway", t, in_incident(t))
    cols = [
        "event_id",
        "timestamp",
        "service",
        "endpoint",
        "status_code",
        "latency_ms",
        "trace_id",
        "span_id",
        "parent_span_id",
        "kind",
        "error_message",
        "attributes",
    ]
    return pd.DataFrame(rows, columns=cols)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def aggregate_into_gold(store, bronze_dir: Path) -> None:
    """What the Spark job writes per window (entry spans), computed once with DuckDB here."""
    from observability import tables
    from observability.schema import ENTRY_SPAN_SQL
    from observability.store import utcnow

    files = str(Path(bronze_dir) / "date=*" / "hour=*" / "*.parquet")
    for table, keys in ((tables.SERVICE_METRICS, "service"), (tables.ENDPOINT_METRICS, "service, endpoint")):
        df = duckdb.sql(
            f"""
            SELECT time_bucket(INTERVAL 1 MINUTE, timestamp) AS window_start,
                   time_bucket(INTERVAL 1 MINUTE, timestamp) + INTERVAL 1 MINUTE AS window_end, {keys},
                   count(*) AS request_count, count(*) FILTER (WHERE status_code >= 500) AS error_count,
                   count(*) FILTER (WHERE status_code BETWEEN 400 AND 499) AS client_error_count,
                   count(*) FILTER (WHERE status_code >= 500) / count(*) AS error_rate,
                   avg(latency_ms) AS avg_latency_ms, quantile_cont(latency_ms, 0.5) AS p50_latency_ms,
                   quantile_cont(latency_ms, 0.95) AS p95_latency_ms, quantile_cont(latency_ms, 0.99) AS p99_latency_ms,
                   max(latency_ms) AS max_latency_ms
            FROM read_parquet('{files}') WHERE {ENTRY_SPAN_SQL} GROUP BY ALL
            """
        ).df()
        df["updated_at"] = utcnow()
        store.insert_df(table, df)


def build_layers(settings, store) -> tuple[int, float]:
    """Silver + gold hour by hour through the job's hook; error_messages into DuckDB."""
    from observability import layers

    t0 = time.process_time()
    n = 0
    for hour_dir in sorted(settings.bronze_dir.glob("date=*/hour=*")):
        files = sorted(str(f) for f in hour_dir.glob("*.parquet"))
        errors = layers.write_batch_layers(settings, files)
        store.write(lambda con, e=errors: layers.insert_error_messages(con, e))
        n += 1
    return n, time.process_time() - t0


def timed(fn) -> tuple[float, float, object]:
    walls, cpus, result = [], [], None
    for _ in range(REPEATS):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append((time.perf_counter() - w) * 1000)
        cpus.append((time.process_time() - c) * 1000)
    return statistics.median(walls), statistics.median(cpus), result


def questions(settings, trace_id: str, around: datetime) -> list[tuple[str, tuple, tuple]]:
    from observability import bronze, layers, tables
    from observability.schema import ENTRY_SPAN_SQL

    end = DAY + timedelta(hours=20)  # "now": an hour after the last incident began
    start = end - timedelta(hours=1)
    bronze_hours = [str(d / "*.parquet") for d in bronze.partition_dirs(settings.bronze_dir, start, end)]
    all_bronze = str(settings.bronze_dir / "date=*" / "hour=*" / "*.parquet")

    gold_db = duckdb.connect(str(settings.duckdb_path), read_only=True)  # held, like bronze's in-process one

    def rate_gold():
        return gold_db.execute(
            f"SELECT service, sum(error_count) / sum(request_count) AS error_rate FROM {tables.SERVICE_METRICS} "
            "WHERE window_start >= ? AND window_start < ? GROUP BY service ORDER BY service",
            [start, end],
        ).df()

    def rate_bronze():
        return duckdb.execute(
            f"SELECT service, count(*) FILTER (WHERE status_code >= 500) / count(*) AS error_rate "
            f"FROM read_parquet(?) WHERE {ENTRY_SPAN_SQL} AND timestamp >= ? AND timestamp < ? "
            "GROUP BY service ORDER BY service",
            [bronze_hours, start, end],
        ).df()

    def top_gold():
        return gold_db.execute(
            f"SELECT service, endpoint, sum(count) AS errors, any_value(error_message) AS message "
            f"FROM {tables.ERROR_MESSAGES} GROUP BY ALL ORDER BY errors DESC, service, endpoint LIMIT 5"
        ).df()

    def top_bronze():
        return duckdb.execute(
            f"SELECT service, endpoint, count(*) AS errors, any_value(error_message) AS message "
            f"FROM read_parquet('{all_bronze}') WHERE error_message IS NOT NULL "
            "GROUP BY ALL ORDER BY errors DESC, service, endpoint LIMIT 5"
        ).df()

    def trace_gold():
        return layers.read_gold_trace(settings.gold_dir, trace_id, around)

    def trace_bronze():
        return bronze.read_trace(settings.bronze_dir, trace_id, around)

    out = []
    for name, g, b in (
        ("error rate last hour", rate_gold, rate_bronze),
        ("top failing endpoints", top_gold, top_bronze),
        ("rebuild trace X", trace_gold, trace_bronze),
    ):
        gold_t, bronze_t = timed(g), timed(b)
        out.append((name, gold_t, bronze_t))
    gold_db.close()
    return out


def error_paths(settings, events: pd.DataFrame) -> tuple[int, int, int]:
    """(incident failing spans, paths rebuilt from gold alone, from gold + silver)."""
    from observability import layers

    failing = events[(events.status_code >= 500) & events.timestamp.map(in_incident)]
    gold = layers._read(layers.gold_files(settings.gold_dir, DAY, DAY + timedelta(days=1)), layers.GOLD_COLUMNS, "", [])
    silver = layers.read_silver(settings.silver_dir, DAY, DAY + timedelta(days=1))
    gold_by_trace = dict(tuple(gold.groupby("trace_id")))
    silver_by_trace = dict(tuple(silver.groupby("trace_id")))
    from_gold = from_both = 0
    for row in failing.itertuples(index=False):
        g = gold_by_trace.get(row.trace_id)
        ok = g is not None and layers.error_path(g, row.span_id) is not None
        from_gold += ok
        if not ok:
            s = silver_by_trace.get(row.trace_id)
            ok = s is not None and layers.error_path(s, row.span_id) is not None
        from_both += ok
    return len(failing), from_gold, from_both


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    os.environ["DATA_DIR"] = str(data_dir)
    from observability import bronze
    from observability.settings import get_settings
    from observability.store import Store

    get_settings.cache_clear()
    settings = get_settings()
    store = Store.from_settings(settings)
    store.migrate()
    try:
        load = os.getloadavg()[0]
        t = time.perf_counter()
        events = generate_day(args.spans)
        bronze.write_events(settings.bronze_dir, events)
        aggregate_into_gold(store, settings.bronze_dir)
        batches, layer_cpu = build_layers(settings, store)
        store.write(lambda con: con.execute("CHECKPOINT"))
        print(
            f"generated {len(events):,} spans in {events.trace_id.nunique():,} traces over {DAY:%Y-%m-%d}, "
            f"{len(INCIDENTS)} incidents; silver+gold for {batches} hourly batches took {layer_cpu:.1f} s CPU "
            f"(setup {time.perf_counter() - t:.0f} s wall, 1-min load {load:.1f})"
        )

        gold_parquet = dir_bytes(settings.gold_dir)
        db_bytes = settings.duckdb_path.stat().st_size
        print("\nbytes per layer")
        for name, n in (
            ("bronze (span Parquet)", dir_bytes(settings.bronze_dir)),
            ("silver (enriched span Parquet)", dir_bytes(settings.silver_dir)),
            ("gold (sampled trace Parquet)", gold_parquet),
            ("gold (DuckDB file: aggregates, error_messages)", db_bytes),
        ):
            print(f"  {name:48s} {n / 1e6:10.2f} MB")
        kept = duckdb.sql(
            f"SELECT sample_reason, count(DISTINCT trace_id) FROM read_parquet('{settings.gold_dir}/traces/*/*.parquet') "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        print("  gold traces kept by reason: " + ", ".join(f"{r} {n:,}" for r, n in kept))

        total, from_gold, from_both = error_paths(settings, events)
        print("\nincident error paths (root span -> failing span)")
        print(f"  failing spans inside incidents     {total:,}")
        print(f"  rebuilt from gold alone            {from_gold:,} ({from_gold / max(total, 1):.1%})")
        print(f"  rebuilt from gold + silver         {from_both:,} ({from_both / max(total, 1):.1%})  goal 100 %")
        goal_line(
            "incident error paths rebuilt from gold + silver",
            f"{from_both / max(total, 1):.1%} ({from_both:,}/{total:,} failing spans, {len(events):,} spans)",
            "100 %",
            f"gold alone {from_gold / max(total, 1):.1%}",
            total > 0 and from_both == total,
        )

        failing = events[(events.status_code >= 500) & events.timestamp.map(in_incident)].iloc[0]
        print(f"\nquestions, median of {REPEATS} runs (ms; gold vs the same question on bronze, same run)")
        print(f"  {'question':24s} {'gold wall':>10s} {'gold CPU':>9s} {'bronze wall':>12s} {'bronze CPU':>11s}  rows")
        for name, (gw, gc, gr), (bw, bc, br) in questions(settings, failing.trace_id, failing.timestamp):
            print(f"  {name:24s} {gw:10.1f} {gc:9.1f} {bw:12.1f} {bc:11.1f}  {len(gr)} / {len(br)}")
    finally:
        if args.keep:
            print(f"\ndata kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
