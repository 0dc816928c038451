"""The model registry API the retraining DAG calls: train, evaluate, promote (or keep)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import joblib
import numpy as np
import pytest
import torch

from anomaly_detection import registry, retraining
from anomaly_detection.detectors import IsolationForestDetector, resolve_device
from anomaly_detection.service import DetectionService
from observability import tables
from tests.seeding import seed_metrics

START = datetime(2025, 4, 7, 0, 0)
TINY_TRANSFORMER = dict(seq_len=8, d_model=16, epochs=2, max_train_sequences=2000, min_train_windows=100)


@pytest.fixture
def seeded(store):
    seed_metrics(store, start=START, minutes=10 * 60, seed=4)
    return store


def test_train_evaluate_promote_then_keep_the_current_when_worse(seeded, settings):
    now = START + timedelta(hours=10)
    v1 = retraining.train_candidate("isolation_forest", settings, seeded, now=now, n_estimators=80)
    path = settings.models_dir / "isolation_forest" / v1
    assert (
        (path / "model.joblib").exists()
        and (path / "manifest.json").exists()
        and (path / "training_metrics.json").exists()
    )
    m1 = retraining.evaluate_candidate(v1, settings, seeded)
    assert m1["current"] is None and m1["candidate"]["holdout"]["recall"] > 0.3
    assert retraining.promote_if_not_worse(v1, m1, settings, seeded) is True
    assert registry.promoted_version(seeded, "isolation_forest") == v1

    # A worse candidate: the same kind of model, but trained on pure noise.
    v2 = retraining.train_candidate(
        "isolation_forest", settings, seeded, now=now + timedelta(minutes=5), n_estimators=80
    )
    bad = joblib.load(settings.models_dir / "isolation_forest" / v2 / "model.joblib")
    rng = np.random.default_rng(0)
    bad.model_.fit(rng.normal(0, 5, size=(500, bad.model_.n_features_in_)))
    joblib.dump(bad, settings.models_dir / "isolation_forest" / v2 / "model.joblib")
    m2 = retraining.evaluate_candidate(v2, settings, seeded)
    assert m2["current_version"] == v1
    assert m2["candidate"]["holdout"]["f1"] < m2["current"]["holdout"]["f1"]
    assert retraining.promote_if_not_worse(v2, m2, settings, seeded) is False
    assert registry.promoted_version(seeded, "isolation_forest") == v1, "the current model stays"

    # A better-or-equal candidate replaces it.
    v3 = retraining.train_candidate(
        "isolation_forest", settings, seeded, now=now + timedelta(minutes=10), n_estimators=80
    )
    m3 = retraining.evaluate_candidate(v3, settings, seeded)
    assert retraining.promote_if_not_worse(v3, m3, settings, seeded) is True
    assert registry.promoted_version(seeded, "isolation_forest") == v3
    rows = seeded.fetch_df(f"SELECT version, promoted, metrics FROM {tables.MODEL_REGISTRY} ORDER BY trained_at")
    assert list(rows.version) == [v1, v2, v3] and list(rows.promoted) == [True, False, True]
    assert "candidate" in json.loads(rows.metrics.iloc[1])

    # The detector loads the promoted version.
    ens = DetectionService(settings, seeded, publish=False, bootstrap_models=False)._ensemble()
    assert isinstance(ens.detectors["isolation_forest"], IsolationForestDetector)


def test_transformer_versions_weights_and_metrics_and_reloads(seeded, settings):
    v = retraining.train_candidate("transformer", settings, seeded, now=START + timedelta(hours=10), **TINY_TRANSFORMER)
    path = settings.models_dir / "transformer" / v
    metrics = json.loads((path / "training_metrics.json").read_text())
    assert metrics["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(metrics["train_loss"]) == 2 and metrics["val_mse"] >= 0
    m = retraining.evaluate_candidate(v, settings, seeded)
    assert retraining.promote_if_not_worse(v, m, settings, seeded) is True
    det = registry.load(settings, v)
    df = seeded.fetch_df("SELECT * FROM service_metrics ORDER BY window_start LIMIT 200")
    s = det.set_context(df.iloc[:100]).score(df.iloc[100:])
    assert s.shape == (100,) and ((s >= 0) & (s <= 1)).all()


def test_promotion_rule_on_crafted_metrics(seeded, settings):
    v = retraining.train_candidate(
        "isolation_forest", settings, seeded, now=START + timedelta(hours=10), n_estimators=30
    )
    good = {"f1": 0.9, "false_alerts_per_service_day": 0.5}
    worse_f1 = {"f1": 0.7, "false_alerts_per_service_day": 0.5}
    noisier = {"f1": 0.9, "false_alerts_per_service_day": 3.0}
    for cand, cur, expected in (
        (good, worse_f1, True),
        (worse_f1, good, False),
        (noisier, good, False),
        (good, good, True),
    ):
        metrics = {"candidate": {"holdout": cand, "scenarios": None}, "current": {"holdout": cur, "scenarios": None}}
        assert retraining.promote_if_not_worse(v, metrics, settings, seeded) is expected


def test_device_is_cuda_when_available_else_cpu(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_unknown_model_kind_is_a_clear_error(seeded, settings):
    with pytest.raises(ValueError, match="isolation_forest"):
        retraining.train_candidate("prophet", settings, seeded)


def test_training_on_a_fresh_empty_platform_neither_crashes_nor_promotes(store, settings):
    """The retraining DAG's first run happens on an empty database."""
    from anomaly_detection.retraining import evaluate_candidate, promote_if_not_worse, train_candidate

    for model in ("transformer", "isolation_forest"):
        version = train_candidate(model, settings=settings, store=store)
        metrics = evaluate_candidate(version, settings=settings, store=store)
        assert promote_if_not_worse(version, metrics, settings=settings, store=store) is False
    rows = store.fetch_all("SELECT model, promoted FROM model_registry ORDER BY model")
    assert rows == [("isolation_forest", False), ("transformer", False)]
