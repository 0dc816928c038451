"""retraining_dag: a real Airflow run training real models on a seeded DuckDB.

The current model of each kind is set up by hand through the same functions
the DAG calls, then one DAG run trains candidates and decides. A small
transformer (run conf) keeps the runs quick on a CPU.
"""

from __future__ import annotations

from tests.airflow_fixtures import airflow_db, dagbag  # noqa: F401  (environment first)

import json  # noqa: E402
from datetime import timedelta  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from observability import tables  # noqa: E402
from tests.seeding import seed_metrics  # noqa: E402

MODELS = ("isolation_forest", "transformer")
SMALL = {"transformer": {"epochs": 1, "max_train_sequences": 1000}}
SERVICES = ("checkout", "payments", "search")


def make_current(model: str, **params) -> str:
    """Train and promote a model as if an earlier run had (nothing promoted yet: it is promoted)."""
    from anomaly_detection.retraining import evaluate_candidate, promote_if_not_worse, train_candidate

    version = train_candidate(model, **{**SMALL.get(model, {}), **params})
    assert promote_if_not_worse(version, evaluate_candidate(version))
    return version


def run_retraining(dagbag) -> tuple[str, dict]:
    dag = dagbag.get_dag("retraining_dag")
    run = dag.test(run_conf={"hyperparameters": SMALL})
    return str(run.state), run


def registry_rows(store) -> dict[str, tuple]:
    rows = store.fetch_all(f"SELECT version, model, promoted, metrics FROM {tables.MODEL_REGISTRY}")
    return {v: (m, p, json.loads(js)) for v, m, p, js in rows}


def promoted_versions(store) -> dict[str, str]:
    from anomaly_detection import registry

    return {m: registry.promoted_version(store, m) for m in MODELS}


def poison_training_span(store, clean: pd.DataFrame) -> None:
    """Unlabelled faults in 30% of the older windows: a model trained on them learns faults as normal."""
    df = clean.copy()
    rng = np.random.default_rng(5)
    older = df["window_start"] < df["window_start"].min() + timedelta(hours=5, minutes=50)
    idx = df.index[older & (rng.random(len(df)) < 0.3)]
    for c in ("avg_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "max_latency_ms"):
        df.loc[idx, c] *= 5
    df.loc[idx, "error_rate"] = 0.3
    df.loc[idx, "error_count"] = (df.loc[idx, "request_count"] * 0.3).round().astype(int)
    store.insert_df(tables.SERVICE_METRICS, df, upsert=True)


def test_retraining_promotes_a_better_model(dagbag, settings, store):
    seed_metrics(store, services=SERVICES, minutes=12 * 60, seed=1)
    # current models that alert on half of all normal windows
    before = {m: make_current(m, calibration_quantile=0.5) for m in MODELS}

    state, _ = run_retraining(dagbag)

    assert state == "success"
    rows = registry_rows(store)
    candidates = {m: v for v, (m, _, _) in rows.items() if v not in before.values()}
    assert set(candidates) == set(MODELS)
    assert promoted_versions(store) == candidates
    for model, version in candidates.items():
        _, promoted, metrics = rows[version]
        assert promoted and metrics["decision"] == "not worse than current"
        assert metrics["current_version"] == before[model]
        assert metrics["candidate"]["holdout"]["f1"] > metrics["current"]["holdout"]["f1"]


def test_retraining_keeps_the_current_model_when_the_candidate_is_worse(dagbag, settings, store):
    clean = seed_metrics(store, services=SERVICES, minutes=12 * 60, seed=1)
    current = {m: make_current(m) for m in MODELS}
    poison_training_span(store, clean)

    state, _ = run_retraining(dagbag)

    assert state == "success"  # keeping the current model is a normal outcome, not a failure
    rows = registry_rows(store)
    candidates = {m: v for v, (m, _, _) in rows.items() if v not in current.values()}
    assert set(candidates) == set(MODELS)  # every run is recorded, promoted or not
    rows_dbg = {m: rows[v][2] for m, v in candidates.items()}
    assert promoted_versions(store) == current, rows_dbg
    for model, version in candidates.items():
        _, promoted, metrics = rows[version]
        assert not promoted, (model, metrics)
        assert metrics["candidate"]["holdout"]["f1"] < metrics["current"]["holdout"]["f1"]
