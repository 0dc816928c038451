"""retraining_dag: a real Airflow run training real models on a seeded DuckDB.

The current model of each kind is set up through the same functions the DAG
calls, then one DAG run trains candidates and decides. A model calibrated to
the median of normal scores (`calibration_quantile=0.5`) alerts on half of all
normal windows: the clearly worse side of each comparison. A small
transformer (run conf) keeps the runs quick on a CPU.
"""

from __future__ import annotations

import json

from observability import tables
from tests.seeding import seed_metrics

MODELS = ("isolation_forest", "transformer")
SMALL = {"transformer": {"epochs": 1, "max_train_sequences": 1000}}
SERVICES = ("checkout", "payments", "search")


def make_current(model: str, **params) -> str:
    """Train and promote a model as if an earlier run had (nothing promoted yet: it is promoted)."""
    from anomaly_detection.retraining import evaluate_candidate, promote_if_not_worse, train_candidate

    version = train_candidate(model, **{**SMALL.get(model, {}), **params})
    assert promote_if_not_worse(version, evaluate_candidate(version))
    return version


def run_retraining(dagbag, hyperparameters: dict) -> str:
    run = dagbag.get_dag("retraining_dag").test(run_conf={"hyperparameters": hyperparameters})
    return str(run.state)


def registry_rows(store) -> dict[str, tuple]:
    rows = store.fetch_all(f"SELECT version, model, promoted, metrics FROM {tables.MODEL_REGISTRY}")
    return {v: (m, p, json.loads(js)) for v, m, p, js in rows}


def promoted_versions(store) -> dict[str, str]:
    from anomaly_detection import registry

    return {m: registry.promoted_version(store, m) for m in MODELS}


def test_retraining_promotes_a_better_model(dagbag, settings, store):
    seed_metrics(store, services=SERVICES, minutes=12 * 60, seed=1)
    # current models that alert on half of all normal windows
    before = {m: make_current(m, calibration_quantile=0.5) for m in MODELS}

    assert run_retraining(dagbag, SMALL) == "success"
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
    seed_metrics(store, services=SERVICES, minutes=12 * 60, seed=1)
    current = {m: make_current(m) for m in MODELS}
    # this run's candidates alert on half of all normal windows
    worse = {m: {**SMALL.get(m, {}), "calibration_quantile": 0.5} for m in MODELS}

    # keeping the current model is a normal outcome, not a failure
    assert run_retraining(dagbag, worse) == "success"

    rows = registry_rows(store)
    candidates = {m: v for v, (m, _, _) in rows.items() if v not in current.values()}
    assert set(candidates) == set(MODELS)  # every run is recorded, promoted or not
    assert promoted_versions(store) == current
    for model, version in candidates.items():
        _, promoted, metrics = rows[version]
        assert not promoted, (model, metrics["decision"])
        assert metrics["current_version"] == current[model]
        assert metrics["candidate"]["holdout"]["f1"] < metrics["current"]["holdout"]["f1"]
