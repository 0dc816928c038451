"""Generator -> the real Spark job -> detector --once: labelled scenarios are found, on time.

The DuckDB GROUP BY stand-in (`--aggregator duckdb`) is for quick evaluation runs only; this
measures detection on the windows the production job computes.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from anomaly_detection.evaluation import scenarios as scenario_eval
from observability import tables
from observability.settings import Settings
from observability.store import Store


@pytest.mark.e2e
def test_generated_scenarios_through_the_spark_job_are_detected_within_90_seconds(tmp_path):
    data_dir = tmp_path / "scen"
    scenario_eval.produce(
        data_dir,
        seed=3,
        start=datetime(2025, 1, 6),
        duration_s=130 * 60,
        specs=["error_surge:payments@80+10", "traffic_drop:search@105+10"],
        aggregator="spark",
        clean=False,
    )
    store = Store.from_settings(Settings(DATA_DIR=data_dir))
    assert store.fetch_one(f"SELECT count(*) FROM {tables.ENDPOINT_METRICS}")[0] > 0, (
        "the Spark job wrote the windows (the stand-in writes no endpoint rows)"
    )
    assert store.fetch_one(f"SELECT sum(rows_in) FROM {tables.STREAM_PROGRESS}")[0] > 100_000
    assert "detector summary:" in scenario_eval.detect(data_dir, bootstrap=False)
    m = scenario_eval.score_run(store)
    assert m.loc["error_surge", "recall"] == 1.0 and m.loc["traffic_drop", "recall"] == 1.0
    assert m.loc["all", "precision"] >= 0.9, m.to_string()
    assert m.loc["all", "median_delay_s"] <= 90
