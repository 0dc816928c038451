"""Time to a rendered overview with 7 days of 1-minute windows for 10 services.

Seeds a temporary DuckDB with ~100k `service_metrics` rows (plus a few
incidents to shade), starts `streamlit run dashboard/app.py` as a subprocess,
and measures with headless Chromium (Playwright) from navigation to the
overview's charts being visible. Baselines in the same run: the overview's
queries in-process (downsampled, as the page runs them) and the raw query
without downsampling. Goal: at most 2 s to a rendered overview.

    .venv/bin/python bench/bench_dashboard.py [--runs 5] [--port 8606]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LOG_LEVEL", "WARNING")

from dashboard import queries, server  # noqa: E402
from dashboard.ranges import RANGES  # noqa: E402
from observability import tables  # noqa: E402
from observability.store import Store, utcnow  # noqa: E402

GOAL_SECONDS = 2.0
SERVICES = [f"svc-{i:02d}" for i in range(10)]
DAYS = 7
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def seed(store: Store) -> int:
    """7 days x 1440 one-minute windows x 10 services, vectorised."""
    rng = np.random.default_rng(7)
    now = utcnow().replace(second=0, microsecond=0)
    minutes = DAYS * 24 * 60
    starts = pd.date_range(end=now - timedelta(minutes=1), periods=minutes, freq="1min")
    frames = []
    for i, service in enumerate(SERVICES):
        daily = 1 + 0.4 * np.sin((starts.hour + starts.minute / 60 - 6) / 24 * 2 * np.pi)
        req = np.maximum(1, rng.normal((300 + 50 * i) * daily, 15)).astype(np.int64)
        err = rng.binomial(req, 0.01)
        lat = (40 + 10 * i) * (1 + rng.normal(0, 0.05, minutes))
        frames.append(
            pd.DataFrame(
                dict(
                    window_start=starts, window_end=starts + pd.Timedelta(minutes=1), service=service,
                    request_count=req, error_count=err, client_error_count=(req * 0.02).astype(np.int64),
                    error_rate=err / req, avg_latency_ms=lat, p50_latency_ms=lat * 0.9, p95_latency_ms=lat * 2,
                    p99_latency_ms=lat * 3, max_latency_ms=lat * 5, updated_at=starts + pd.Timedelta(minutes=1),
                )
            )
        )
    df = pd.concat(frames, ignore_index=True)
    store.insert_df(tables.SERVICE_METRICS, df)
    incidents = [
        (f"inc-{k}", SERVICES[k], now - timedelta(days=k + 1), now - timedelta(days=k + 1) + timedelta(minutes=40), "resolved")
        for k in range(3)
    ] + [("inc-open", SERVICES[5], now - timedelta(minutes=20), None, "open")]
    store.executemany(
        f"""INSERT INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity,
            root_cause_service, related_services, updated_at) VALUES (?, ?, ?, ?, ?, 'high', ?, [], ?)""",
        [[i, s, a, b, st, s, now] for i, s, a, b, st in incidents],
    )
    return len(df)


def timed(fn, runs: int) -> tuple[float, object]:
    samples, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), out


def overview_queries(store: Store, range_key: str):
    """What the overview page runs on a cache miss (one connection, four queries)."""
    return queries.overview(store, RANGES[range_key], utcnow()).series


def render_times(url: str, runs: int) -> dict[str, list[float]]:
    """Navigation -> all three overview charts visible, each run in a fresh browser context."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for range_key in ("7d", "6h"):
                samples = []
                for _ in range(runs + 1):  # the first visit of each range fills the server's caches
                    context = browser.new_context(viewport={"width": 1500, "height": 1800})
                    page = context.new_page()
                    t = time.perf_counter()
                    page.goto(f"{url}/?range={range_key}")
                    page.locator(".js-plotly-plot").nth(2).wait_for(state="visible", timeout=60_000)
                    samples.append(time.perf_counter() - t)
                    assert page.locator(".js-plotly-plot").count() == 3
                    bucket = RANGES[range_key].bucket_minutes
                    assert page.get_by_text(f"{bucket}-minute buckets").count() == 1, "range not applied"
                    context.close()
                out[range_key] = samples
        finally:
            browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=None, help="default: first free in 8606-8610")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp:
        data_dir = Path(tmp) / "data"
        store = Store(data_dir / "observability.duckdb")
        store.migrate()
        t = time.perf_counter()
        rows = seed(store)
        print(f"seeded {rows:,} service_metrics rows ({len(SERVICES)} services x {DAYS} d of 1-minute windows) in {time.perf_counter() - t:.1f} s")

        q_down, series = timed(lambda: overview_queries(store, "7d"), args.runs)
        raw_sql = f"SELECT * FROM {tables.SERVICE_METRICS} WHERE window_start >= ?"
        q_raw, raw = timed(lambda: store.fetch_df(raw_sql, [utcnow() - timedelta(days=DAYS)]), args.runs)
        print(f"overview queries in-process, 7 d, 30-min buckets: median {q_down * 1000:.0f} ms, {len(series):,} rows to draw")
        print(f"baseline: raw 7 d query without downsampling:   median {q_raw * 1000:.0f} ms, {len(raw):,} rows")

        host = "127.0.0.1"
        port = args.port or server.free_port(host, range(8606, 8611))
        proc = server.start(host, port, env={"DATA_DIR": str(data_dir)}, log_path=Path(tmp) / "streamlit.log")
        try:
            t = time.perf_counter()
            server.wait_healthy(host, port, timeout=90, proc=proc)
            print(f"streamlit healthy after {time.perf_counter() - t:.1f} s (/_stcore/health)")
            times = render_times(f"http://{host}:{port}", args.runs)
        finally:
            server.stop(proc)

    result = {"rows": rows, "query_downsampled_s": q_down, "query_raw_s": q_raw}
    for range_key, samples in times.items():
        first, rest = samples[0], samples[1:]
        med = statistics.median(rest)
        result[f"render_{range_key}_first_s"] = first
        result[f"render_{range_key}_median_s"] = med
        print(
            f"rendered overview, range {range_key}: median {med:.2f} s (min {min(rest):.2f}, max {max(rest):.2f}, n={len(rest)}); "
            f"first visit (server caches cold) {first:.2f} s"
        )
    verdict = "PASS" if result["render_7d_median_s"] <= GOAL_SECONDS else "FAIL"
    print(f"goal: rendered 7-day overview <= {GOAL_SECONDS:.1f} s: {verdict} ({result['render_7d_median_s']:.2f} s; "
          f"{result['render_7d_median_s'] / q_down:.0f}x the in-process query time)")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dashboard.json").write_text(json.dumps(result, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
