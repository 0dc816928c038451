"""One contract, every detector: the interface promises of `BaseDetector`."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly_detection.detectors import (
    BaseDetector,
    IsolationForestDetector,
    RobustStatsDetector,
    RulesDetector,
    TransformerDetector,
)
from tests.seeding import metrics_frame

START = datetime(2025, 2, 3, 0, 0)
SERVICES = ("checkout", "payments", "search", "inventory", "database")

FACTORIES = {
    "rules": lambda seed=0: RulesDetector(seed=seed),
    "robust_stats": lambda seed=0: RobustStatsDetector(seed=seed),
    "isolation_forest": lambda seed=0: IsolationForestDetector(n_estimators=60, min_train_windows=100, seed=seed),
    "transformer": lambda seed=0: TransformerDetector(
        seq_len=8, d_model=16, epochs=2, min_train_windows=100, max_train_sequences=1500, device="cpu", seed=seed
    ),
}
LEARNED = {"isolation_forest", "transformer"}


@pytest.fixture(scope="module")
def frames():
    df = metrics_frame(services=SERVICES, start=START, minutes=330, seed=3, incident=("payments", 310, 319))
    cut = START + timedelta(minutes=300)
    history, windows = df[df.window_start < cut], df[df.window_start >= cut].reset_index(drop=True)
    is_incident = (
        (windows.service == "payments")
        & (windows.window_start >= START + timedelta(minutes=310))
        & (windows.window_start <= START + timedelta(minutes=319))
    ).to_numpy()
    return history, windows, is_incident


@pytest.fixture(scope="module")
def fitted(frames):
    history, _, _ = frames
    return {name: make().fit(history) for name, make in FACTORIES.items()}


@pytest.fixture(params=list(FACTORIES))
def name(request):
    return request.param


def test_is_a_base_detector_with_hyperparameters_only(name):
    det = FACTORIES[name]()
    assert isinstance(det, BaseDetector)
    assert not [k for k in vars(det) if k.endswith("_")], "a fresh detector holds no fitted state"
    assert "seed" in det.get_params()


def test_scores_have_one_value_per_window_in_unit_range(name, fitted, frames):
    _, windows, _ = frames
    s = fitted[name].score(windows)
    assert s.shape == (len(windows),)
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()


def test_obvious_anomaly_scores_higher_than_normal(name, fitted, frames):
    _, windows, inc = frames
    s = fitted[name].score(windows)
    assert s[inc].mean() > np.quantile(s[~inc], 0.95)
    if name not in LEARNED:
        assert (s[inc] >= 0.5).all(), "rules and statistics flag every window of a 30 % error, 4x latency incident"
        assert (s[~inc] < 0.5).all(), "and none of the normal ones"
    else:
        assert s[inc].max() >= 0.5


def test_deterministic_with_a_seed(name, frames):
    history, windows, _ = frames
    a = FACTORIES[name](seed=11).fit(history).score(windows)
    b = FACTORIES[name](seed=11).fit(history).score(windows)
    np.testing.assert_allclose(a, b)


def test_scoring_order_and_batching_do_not_change_scores(name, fitted, frames):
    _, windows, _ = frames
    det = fitted[name]
    whole = det.score(windows)
    shuffled = windows.sample(frac=1.0, random_state=1)
    np.testing.assert_allclose(det.score(shuffled), whole[shuffled.index.to_numpy()], atol=1e-6)


def test_empty_single_event_and_nan_windows_never_crash_or_alarm(name, fitted, frames):
    history, _, _ = frames
    det = fitted[name]
    assert det.score(pd.DataFrame(columns=history.columns)).shape == (0,)
    last = history.window_start.max()
    single = pd.DataFrame(
        [
            dict(
                window_start=last + timedelta(minutes=1 + i),
                window_end=last + timedelta(minutes=2 + i),
                service="sparse",
                request_count=1,
                error_count=1,
                client_error_count=0,
                error_rate=1.0,
                avg_latency_ms=None,
                p50_latency_ms=None,
                p95_latency_ms=None,
                p99_latency_ms=None,
                max_latency_ms=None,
            )
            for i in range(3)
        ]
    )
    nan_rows = history[history.window_start == last].copy()
    nan_rows["window_start"] = last + timedelta(minutes=1)
    nan_rows["window_end"] = last + timedelta(minutes=2)
    for col in ("request_count", "error_count", "error_rate", "avg_latency_ms", "p95_latency_ms", "p99_latency_ms"):
        nan_rows[col] = np.nan
    for frame in (single, nan_rows, pd.concat([single, nan_rows], ignore_index=True)):
        s = det.score(frame)
        assert s.shape == (len(frame),)
        assert (s < 0.5).all(), f"{name} alarmed on noise: {s}"
    info = det.explain(single.iloc[0])
    assert {"score", "anomaly_type", "baseline", "observed"} <= set(info)


def test_works_for_a_service_never_seen(name, fitted):
    df = metrics_frame(
        services=("brand-new",),
        start=START + timedelta(minutes=400),
        minutes=150,
        seed=5,
        incident=("brand-new", 140, 149),
    )
    s = fitted[name].score(df)
    inc = np.arange(len(df)) >= 140
    assert s.shape == (len(df),)
    assert s[inc].mean() > s[~inc].mean()
    if name not in LEARNED:
        assert (s[inc] >= 0.5).all() and (s[~inc][20:] < 0.5).all()


def test_works_with_little_history(name, frames):
    history, windows, inc = frames
    little = history[history.window_start >= history.window_start.max() - timedelta(minutes=10)]
    det = FACTORIES[name]().fit(little)
    s = det.score(windows)
    assert s.shape == (len(windows),) and np.isfinite(s).all()
    assert (s[~inc] < 0.5).mean() > 0.98
    if name in LEARNED:
        assert not det.ready_ and (s == 0).all(), "a model without enough data stays silent; rules and statistics carry"
    else:
        assert (s[inc] >= 0.5).all()
