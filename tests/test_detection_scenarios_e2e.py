"""Generator -> DuckDB aggregation -> detector --once: a labelled scenario is found, on time."""

from __future__ import annotations

from datetime import datetime

import pytest

from anomaly_detection import scenario_eval
from observability.settings import Settings
from observability.store import Store


@pytest.mark.e2e
def test_a_generated_error_surge_is_detected_within_90_seconds(tmp_path):
    data_dir = tmp_path / "scen"
    scenario_eval.produce(data_dir, seed=3, start=datetime(2025, 1, 6), duration_s=100 * 60,
                          specs=["error_surge:payments@80+10"], aggregator="duckdb", clean=False)
    assert "detector summary:" in scenario_eval.detect(data_dir, bootstrap=False)
    m = scenario_eval.score_run(Store.from_settings(Settings(DATA_DIR=data_dir)))
    assert m.loc["error_surge", "recall"] == 1.0
    assert m.loc["all", "precision"] >= 0.9
    assert m.loc["error_surge", "median_delay_s"] <= 90
