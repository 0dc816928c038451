"""Time to a rendered page, for every page of the dashboard, on 7 days x 10 services.

Seeds a temporary DuckDB with ~100k `service_metrics` rows (10 services x 7 days of
1-minute windows) and a week of everything the other pages read
(`bench/dashboard_pages.py`: incidents, anomalies, traces, the call graph, health
checks, logs, ...), then:

- each page's queries, timed in-process on the seeded data with no cache (what the
  page's cached loaders run on a miss);
- each page rendered: `streamlit run dashboard/app.py` as a subprocess, headless
  Chromium (Playwright) from navigation to the page's content visible, as a
  returning visitor (browser cache warm) and on a first visit (fresh profile);
- the baseline in the same run: the same Streamlit serving one 3-point Plotly
  chart, measured before and after the dashboard's pages (pooled).

Goals (issue 17): the overview at most 1.2x the baseline, every page's queries
under 100 ms, no page slower than 2x the baseline. CPU seconds of the whole process
tree (server, driver, browser) per visit are printed beside the wall figures.

    .venv/bin/python bench/bench_dashboard.py [--runs 5] [--port 8606] [--pages overview,health]
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
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LOG_LEVEL", "WARNING")

from bench.dashboard_pages import Page, page_queries, pages, seed_pages  # noqa: E402
from bench.goals import goal_line  # noqa: E402
from dashboard import queries, server  # noqa: E402
from dashboard.ranges import RANGES  # noqa: E402
from observability import tables  # noqa: E402
from observability.store import Store, utcnow  # noqa: E402
from tests.dashboard_fixtures import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

OVERVIEW_GOAL = 1.2  # x the same-run baseline
PAGE_GOAL = 2.0  # x the same-run baseline
QUERY_GOAL_MS = 100.0
SERVICES = [f"svc-{i:02d}" for i in range(10)]
DAYS = 7


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
                    window_start=starts,
                    window_end=starts + pd.Timedelta(minutes=1),
                    service=service,
                    request_count=req,
                    error_count=err,
                    client_error_count=(req * 0.02).astype(np.int64),
                    error_rate=err / req,
                    avg_latency_ms=lat,
                    p50_latency_ms=lat * 0.9,
                    p95_latency_ms=lat * 2,
                    p99_latency_ms=lat * 3,
                    max_latency_ms=lat * 5,
                    updated_at=starts + pd.Timedelta(minutes=1),
                )
            )
        )
    df = pd.concat(frames, ignore_index=True)
    store.insert_df(tables.SERVICE_METRICS, df)
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


BASELINE_APP = """
import plotly.graph_objects as go
import streamlit as st

st.title("Baseline")
st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2])))
"""
BASELINE_PAGE = Page("baseline", "", ".js-plotly-plot", 1)


def tree_cpu() -> dict[int, float]:
    """pid -> user + system CPU seconds of this process and all its descendants (server, Playwright, Chromium)."""
    out = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the process tree spent since `before`, over the processes alive now (a
    tab's renderer is counted before its tab closes; a process that ended is left out)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in tree_cpu().items())


def visit(context, base_url: str, page: Page) -> tuple[float, float]:
    """Navigation -> `page.ready` visible `page.count` times (and its text on the page):
    (wall seconds, CPU seconds of the process tree)."""
    tab = context.new_page()
    cpu0 = tree_cpu()
    t = time.perf_counter()
    tab.goto(f"{base_url}/{page.path}")
    tab.locator(page.ready).nth(page.count - 1).wait_for(state="visible", timeout=90_000)
    if page.text:
        tab.get_by_text(page.text).first.wait_for(state="visible", timeout=90_000)
    elapsed = time.perf_counter() - t
    cpu = cpu_since(cpu0)
    tab.close()
    return elapsed, cpu


def render_times(browser, base_url: str, page_list: list[Page], runs: int) -> dict[str, dict[str, list[float]]]:
    """Per page: "server warm-up" (the very first visit: the server's imports and caches),
    "returning" (one context reused: static assets cached), "first visit" (a fresh
    context each time: empty HTTP and code caches), and "cpu s" (CPU seconds of the
    whole process tree per visit, returning and first visits together)."""
    viewport = {"width": 1500, "height": 1800}
    out: dict[str, dict[str, list[float]]] = {}
    warm_ctx = browser.new_context(viewport=viewport)
    for page in page_list:
        out[page.name] = {"server warm-up": [visit(warm_ctx, base_url, page)[0]]}
    for page in page_list:
        returning = [visit(warm_ctx, base_url, page) for _ in range(runs)]
        fresh = []
        for _ in range(runs):
            ctx = browser.new_context(viewport=viewport)
            fresh.append(visit(ctx, base_url, page))
            ctx.close()
        out[page.name]["returning"] = [w for w, _ in returning]
        out[page.name]["first visit"] = [w for w, _ in fresh]
        out[page.name]["cpu s"] = [c for _, c in returning + fresh]
    warm_ctx.close()
    return out


def serve_and_time(app: Path | None, data_dir: Path, port: int, log: Path, browser, page_list, runs: int):
    host = "127.0.0.1"
    kwargs = {"app": app} if app else {}
    proc = server.start(host, port, env={"DATA_DIR": str(data_dir)}, log_path=log, **kwargs)
    try:
        t = time.perf_counter()
        server.wait_healthy(host, port, timeout=90, proc=proc)
        healthy = time.perf_counter() - t
        return healthy, render_times(browser, f"http://{host}:{port}", page_list, runs)
    finally:
        server.stop(proc)


def time_queries(calls: dict, names: list[str], runs: int) -> dict[str, float]:
    """Per page: (median wall seconds, mean CPU seconds of this process) of its queries, with no
    cache (each call opens its read connections as the page does on a miss)."""
    out = {}
    for name in names:
        calls[name]()  # the first call only pages the file in
        cpu0 = time.process_time()
        wall, _ = timed(calls[name], runs)
        out[name] = (wall, (time.process_time() - cpu0) / runs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=None, help="default: first free in 8606-8610")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: every page)")
    args = parser.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp:
        data_dir = Path(tmp) / "data"
        os.environ["DATA_DIR"] = str(data_dir)  # the pages' own helpers read the settings
        from observability.settings import get_settings

        get_settings.cache_clear()
        store = Store(data_dir / "observability.duckdb")
        store.migrate()
        t = time.perf_counter()
        rows = seed(store)
        seeded = seed_pages(store, get_settings().bronze_dir, SERVICES, utcnow().replace(second=0, microsecond=0), DAYS)
        print(
            f"seeded {rows:,} service_metrics rows ({len(SERVICES)} services x {DAYS} d of 1-minute windows) "
            f"and a week of incidents, anomalies, traces, call graph, health, logs in {time.perf_counter() - t:.1f} s"
        )
        page_list = pages(seeded)
        if args.pages:
            wanted = {p.strip() for p in args.pages.split(",")}
            page_list = [p for p in page_list if p.name in wanted or p.name.split(" ")[0] in wanted]

        q_down, series = timed(lambda: overview_queries(store, "7d"), args.runs)
        raw_sql = f"SELECT * FROM {tables.SERVICE_METRICS} WHERE window_start >= ?"
        q_raw, raw = timed(lambda: store.fetch_df(raw_sql, [utcnow() - timedelta(days=DAYS)]), args.runs)
        print(
            f"overview queries in-process, 7 d, 30-min buckets: median {q_down * 1000:.0f} ms, {len(series):,} rows to draw"
        )
        print(f"baseline: raw 7 d query without downsampling:   median {q_raw * 1000:.0f} ms, {len(raw):,} rows")
        query_s = time_queries(
            page_queries(store, get_settings().bronze_dir, data_dir, seeded), [p.name for p in page_list], args.runs
        )

        port = args.port or server.free_port("127.0.0.1", range(8606, 8611))
        baseline_app = Path(tmp) / "baseline_app.py"
        baseline_app.write_text(BASELINE_APP)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                _, base_before = serve_and_time(
                    baseline_app, data_dir, port, Path(tmp) / "baseline.log", browser, [BASELINE_PAGE], args.runs
                )
                healthy, dash = serve_and_time(
                    None, data_dir, port, Path(tmp) / "dashboard.log", browser, page_list, args.runs
                )
                _, base_after = serve_and_time(
                    baseline_app, data_dir, port, Path(tmp) / "baseline.log", browser, [BASELINE_PAGE], args.runs
                )
            finally:
                browser.close()
        print(f"streamlit healthy after {healthy:.1f} s (/_stcore/health)")
    load = os.getloadavg()[0]
    base = {k: base_before["baseline"][k] + base_after["baseline"][k] for k in ("returning", "first visit", "cpu s")}
    return report(rows, q_down, q_raw, load, query_s, dash, base, page_list)


def report(rows, q_down, q_raw, load, query_s, dash, base, page_list) -> int:
    result = {"rows": rows, "query_downsampled_s": q_down, "query_raw_s": q_raw, "load_average_1m": load, "pages": {}}
    b_ret, b_first = statistics.median(base["returning"]), statistics.median(base["first visit"])
    b_cpu = statistics.median(base["cpu s"])  # per visit
    result.update(baseline_returning_s=b_ret, baseline_first_visit_s=b_first, baseline_cpu_s_per_visit=b_cpu)
    print(
        f"baseline (Streamlit + one 3-point Plotly chart, before and after the pages): returning {b_ret:.2f} s, "
        f"first visit {b_first:.2f} s, {b_cpu:.2f} CPU s per visit (process tree)"
    )
    print(
        f"{'page':18s} {'queries (CPU)':>18s} {'warm-up':>8s} {'returning':>10s} {'first visit':>12s} "
        f"{'x baseline':>11s} {'CPU s/visit':>11s}"
    )
    for page in page_list:
        d = dash[page.name]
        ret, first = statistics.median(d["returning"]), statistics.median(d["first visit"])
        ratio = max(ret / b_ret, first / b_first)
        result["pages"][page.name] = dict(
            queries_s=query_s[page.name][0],
            queries_cpu_s=query_s[page.name][1],
            server_warm_up_s=d["server warm-up"][0],
            returning_s=ret,
            first_visit_s=first,
            ratio_to_baseline=ratio,
            cpu_s_per_visit=statistics.median(d["cpu s"]),
        )
        print(
            f"{page.name:18s} {query_s[page.name][0] * 1000:6.1f} ms ({query_s[page.name][1] * 1000:5.1f} ms) "
            f"{d['server warm-up'][0]:6.2f} s {ret:8.2f} s {first:10.2f} s {ret / b_ret:5.2f}/{first / b_first:4.2f}x "
            f"{statistics.median(d['cpu s']):9.2f} s"
        )
    print(
        f"1-minute load average at the end: {load:.1f} on {os.cpu_count()} CPUs (other work on the machine slows the browser)"
    )
    baseline = f"Streamlit + one chart {b_ret:.2f} s returning / {b_first:.2f} s first visit, CPU {b_cpu:.2f} s/visit"
    for page in page_list:
        r = result["pages"][page.name]
        goal = OVERVIEW_GOAL if page.name == "overview" else PAGE_GOAL
        goal_line(
            f"dashboard {page.name}: render, 7 d x 10 services",
            f"{r['returning_s']:.2f} s returning / {r['first_visit_s']:.2f} s first visit ({r['ratio_to_baseline']:.2f}x; "
            f"CPU {r['cpu_s_per_visit']:.2f} s/visit, {r['cpu_s_per_visit'] / b_cpu:.2f}x)",
            f"<= {goal:.1f}x baseline",
            baseline,
            r["ratio_to_baseline"] <= goal,
        )
    for page in page_list:
        ms = result["pages"][page.name]["queries_s"] * 1000
        cpu_ms = result["pages"][page.name]["queries_cpu_s"] * 1000
        goal_line(
            f"dashboard {page.name}: queries (no cache)",
            f"{ms:.1f} ms ({cpu_ms:.1f} CPU ms)",
            f"< {QUERY_GOAL_MS:.0f} ms",
            f"raw 7 d metrics read {q_raw * 1000:.0f} ms",
            ms < QUERY_GOAL_MS,
        )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dashboard.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
