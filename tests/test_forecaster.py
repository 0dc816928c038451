"""The forecaster: bucketing, models by history length, SLA risk, the stored tables, the overview panel."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from anomaly_detection import forecasting, sla_risk
from anomaly_detection.forecast_service import ForecastService
from observability import forecasts, tables
from observability.settings import Settings
from observability.store import Store
from tests.prometheus_scrape import free_port, value, wait_for_metric
from tests.seeding import metrics_frame, seed_metrics

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 10, 0)


def minute_rows(service: str, start: datetime, values: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """(request_count, error_count, p95, p99) per minute from `start`."""
    rows = []
    for i, (req, err, p95, p99) in enumerate(values):
        ws = start + timedelta(minutes=i)
        rows.append(
            dict(
                window_start=ws,
                window_end=ws + timedelta(minutes=1),
                service=service,
                request_count=req,
                error_count=err,
                p95_latency_ms=p95,
                p99_latency_ms=p99,
            )
        )
    return pd.DataFrame(rows)


def test_buckets_keep_complete_buckets_and_weight_percentiles_by_requests():
    # 7 minutes: one full bucket [10:00, 10:05) and two minutes of the next, which is not complete
    values = [(100, 1, 10.0, 20.0)] * 4 + [(300, 9, 50.0, 60.0)] + [(100, 50, 999.0, 999.0)] * 2
    b = forecasting.buckets(minute_rows("svc", T0, values), T0 + timedelta(minutes=7))
    assert list(b["bucket"]) == [pd.Timestamp(T0)]
    row = b.iloc[0]
    assert row["request_rate"] == pytest.approx(700 / 300)  # requests per second over the 5 minutes
    assert row["error_rate"] == pytest.approx(13 / 700)
    assert row["p95_latency_ms"] == pytest.approx((4 * 100 * 10 + 300 * 50) / 700)
    assert row["p99_latency_ms"] == pytest.approx((4 * 100 * 20 + 300 * 60) / 700)


def test_model_follows_history_length_and_too_little_is_skipped():
    assert forecasting.model_tier(2) is None
    assert forecasting.model_tier(3) == "mean"
    assert forecasting.model_tier(12) == "ets"
    assert forecasting.model_tier(2 * 288) == "mstl_daily"


def _series(n: int, start: datetime = T0, fn=lambda i: 100.0) -> pd.Series:
    idx = pd.date_range(start, periods=n, freq="5min")
    return pd.Series([fn(i) for i in range(n)], index=idx, dtype=float)


def test_short_histories_forecast_an_hour_with_intervals_and_tiny_ones_are_skipped():
    rng = np.random.default_rng(3)
    history = {
        forecasting.SeriesKey("new", "p99_latency_ms"): _series(4, fn=lambda i: 200 + rng.normal(0, 5)),
        forecasting.SeriesKey("young", "request_rate"): _series(30, fn=lambda i: 50 + rng.normal(0, 2)),
        forecasting.SeriesKey("born", "error_rate"): _series(2, fn=lambda i: 0.01),
    }
    fc, skipped = forecasting.forecast(history, level=90)
    assert skipped == [forecasting.SeriesKey("born", "error_rate")]
    for service, n, model in (("new", 4, "mean"), ("young", 30, "ets")):
        f = fc[fc["service"] == service]
        assert len(f) == 12 and set(f["model"]) == {model}
        first = pd.Timestamp(T0) + pd.Timedelta(minutes=5 * n)  # the bucket after the last one seen
        assert list(f["target_time"]) == list(pd.date_range(first, periods=12, freq="5min"))
        assert (f["lower"] <= f["predicted"]).all() and (f["predicted"] <= f["upper"]).all()
        assert (f["upper"] > f["lower"]).all()
    young = fc[fc["service"] == "young"]["predicted"]
    assert young.between(40, 60).all()


def test_daily_season_is_followed_once_two_days_are_there():
    # a daily sine: the next hour climbs steeply; a non-seasonal model would stay flat
    def daily(i: int) -> float:
        return 100 + 60 * math.sin(2 * math.pi * i / 288)

    n = 3 * 288 - 6  # the next hour is the steepest climb of the day
    fc, _ = forecasting.forecast({forecasting.SeriesKey("s", "request_rate"): _series(n, fn=daily)})
    assert set(fc["model"]) == {"mstl_daily"}
    expected = np.array([daily(n + k) for k in range(12)])
    assert np.abs(fc["predicted"].to_numpy() - expected).max() < 3.0
    assert expected[-1] - expected[0] > 10  # the test would catch a flat forecast


def test_exceed_probability_matches_the_interval():
    level = 90
    pred, lo, hi = np.array([100.0]), np.array([80.0]), np.array([130.0])
    assert sla_risk.exceed_probability(pred, lo, hi, 100.0, level)[0] == pytest.approx(0.5)
    assert sla_risk.exceed_probability(pred, lo, hi, 130.0, level)[0] == pytest.approx(0.05)
    assert sla_risk.exceed_probability(pred, lo, hi, 80.0, level)[0] == pytest.approx(0.95)
    assert sla_risk.exceed_probability(pred, lo, hi, 1000.0, level)[0] < 1e-6


def test_slas_configured_learned_and_error_rate():
    s = Settings(SERVICE_P99_SLAS={"checkout": 250}, SERVICE_SLAS={"checkout": 180}, ERROR_RATE_SLA=0.02)
    history = metrics_frame(services=("checkout", "search"), minutes=60, start=T0)
    got = {(x.metric, x.source) for x in sla_risk.slas_for("checkout", history[history.service == "checkout"], s)}
    assert got == {("p99_latency_ms", "configured"), ("p95_latency_ms", "configured"), ("error_rate", "configured")}
    learned = sla_risk.slas_for("search", history[history.service == "search"], s)
    p99 = next(x for x in learned if x.metric == "p99_latency_ms")
    assert p99.source == "learned"
    assert p99.value >= history.loc[history.service == "search", "p99_latency_ms"].quantile(0.99)
    # under 30 windows nothing is learned: no p99 SLA rather than a made-up one
    few = sla_risk.slas_for("search", history[history.service == "search"].head(10), s)
    assert [x.metric for x in few] == ["error_rate"]


def test_run_once_stores_forecasts_and_sla_risk_then_waits_for_a_new_bucket(store, monkeypatch):
    rows = seed_metrics(store, services=("checkout", "search"), minutes=90, seed=4)
    p99 = rows.groupby("service")["p99_latency_ms"].median()
    # checkout's p99 SLA is below its usual p99: certain to be crossed; search's far above: never
    monkeypatch.setenv("SERVICE_P99_SLAS", f'{{"checkout": {p99["checkout"] * 0.5}, "search": {p99["search"] * 10}}}')
    settings = Settings()
    service = ForecastService(settings, store)
    run = service.run_once()
    assert run.refreshed and run.services == 2 and run.series == 8 and run.rows == 8 * 12
    assert "checkout:p99_latency_ms" in run.at_risk and not any(r.startswith("search:") for r in run.at_risk)

    fc = forecasts.current_forecasts(store)
    assert set(fc["metric"]) == set(tables.FORECAST_METRICS)
    assert fc["made_at"].nunique() == 1 and len(fc) == 96
    assert fc["target_time"].min() == pd.Timestamp(run.origin)
    risk = forecasts.sla_risk(store).set_index(["service", "metric"])
    checkout = risk.loc[("checkout", "p99_latency_ms")]
    assert checkout["at_risk"] and checkout["probability"] > 0.99 and checkout["sla_source"] == "configured"
    assert checkout["crossing_time"] == pd.Timestamp(run.origin)
    assert risk.loc[("search", "p99_latency_ms")]["probability"] < 0.01
    assert set(forecasts.at_risk(store)["service"]) == {"checkout"}

    again = service.run_once()
    assert not again.refreshed  # no new complete bucket
    assert store.fetch_one(f"SELECT count(DISTINCT made_at) FROM {tables.FORECASTS}")[0] == 1


def test_old_runs_are_pruned_and_risk_rows_replaced(store):
    seed_metrics(store, services=("checkout",), minutes=30, seed=1)
    old = datetime(2020, 1, 1)
    store.execute(f"INSERT INTO {tables.FORECASTS} VALUES ('gone', 'error_rate', ?, 0.1, 0, 0.2, ?)", [old, old])
    store.execute(
        f"INSERT INTO {tables.SLA_RISK} VALUES ('gone', 'error_rate', 0.05, 'configured', 0.9, NULL, 0.1, true, ?)",
        [old],
    )
    ForecastService(Settings(), store).run_once(force=True)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.FORECASTS} WHERE service = 'gone'")[0] == 0
    assert set(forecasts.sla_risk(store)["service"]) == {"checkout"}


def test_no_windows_yet_is_not_an_error_and_the_schema_is_created(settings):
    assert not settings.duckdb_path.exists()  # a fresh DATA_DIR: nothing migrated yet
    run = ForecastService(settings).run_once(force=True)
    assert not run.refreshed and run.rows == 0
    versions = Store.from_settings(settings).fetch_all(f"SELECT version FROM {tables.SCHEMA_VERSION}")
    assert settings.duckdb_path.exists() and (11,) in versions  # migrated: the forecasts tables exist


def test_cli_once_prints_its_summary(store, settings):
    seed_metrics(store, services=("payments",), minutes=20, seed=2)
    out = subprocess.run(
        [sys.executable, "-m", "anomaly_detection.forecaster", "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "forecaster summary: refreshed=True" in out.stdout and "services=1" in out.stdout
    beat = store.fetch_one(f"SELECT component FROM {tables.HEARTBEATS} WHERE component = 'forecaster'")
    assert beat == ("forecaster",)


def test_the_loop_serves_metrics_and_stops_on_sigterm(store, data_dir):
    seed_metrics(store, services=("payments", "search"), minutes=20, seed=2)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(data_dir),
        "METRICS_PORT_FORECASTER": str(port),
        "FORECAST_INTERVAL_SECONDS": "0.5",
    }
    proc = subprocess.Popen([sys.executable, "-m", "anomaly_detection.forecaster"], cwd=ROOT, env=env)
    try:
        samples = wait_for_metric(
            port, "observability_events_out_total", timeout=90, stage="forecaster", kind="forecast"
        )
        # 2 services x 4 metrics, 12 steps each; refitted once: no new bucket in the seeded data
        assert value(samples, "observability_events_out_total", stage="forecaster", kind="forecast") == 96
        assert value(samples, "observability_events_in_total", stage="forecaster", kind="series") == 8
        assert value(samples, "observability_batch_duration_seconds_count", stage="forecaster") >= 1
        assert value(samples, "observability_service_info", service="forecaster") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert store.fetch_one(f"SELECT count(DISTINCT made_at) FROM {tables.FORECASTS}")[0] == 1


@pytest.fixture
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def test_overview_shows_the_services_at_risk(store, monkeypatch, _fresh_caches):
    rows = seed_metrics(store, services=("checkout", "search"), minutes=60, seed=5)
    low = rows[rows.service == "search"]["p99_latency_ms"].median() * 0.5
    monkeypatch.setenv("SERVICE_P99_SLAS", f'{{"search": {low}}}')
    ForecastService(Settings(), store).run_once()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    warning = " ".join(w.value for w in at.warning)
    assert "at risk" in warning and "search" in warning and "checkout" not in warning
    table = next(d.value for d in at.dataframe if "Chance within the hour" in d.value.columns)
    assert list(table["Service"]) == ["search"] and list(table["SLA"]) == ["p99 latency"]
    assert table.iloc[0]["Chance within the hour"] == "100%"
