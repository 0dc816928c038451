"""retraining_dag: daily, retrain the Isolation Forest and the transformer and promote only if not worse.

For each model: train a candidate on recent `service_metrics` without incident
windows, evaluate it against the current model on held-out recent data and the
generator's labelled scenarios, and promote it only if it is not worse. Every
run is recorded in `model_registry`; the logic is `anomaly_detection.retraining`.
A run's conf may override hyperparameters per model, e.g.
`{"hyperparameters": {"transformer": {"epochs": 2}}}`: a worse candidate is still never promoted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

MODELS = ("isolation_forest", "transformer")


@dag(
    dag_id="retraining_dag",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=15), "execution_timeout": timedelta(hours=2)},
    params={"hyperparameters": Param({}, type="object", description="model -> hyperparameter overrides")},
    tags=["observability", "models"],
    doc_md=__doc__,
)
def retraining_dag():
    @task
    def train(model: str) -> str:
        """Train a candidate version; returns its id."""
        from anomaly_detection.retraining import train_candidate

        overrides = (get_current_context()["params"].get("hyperparameters") or {}).get(model, {})
        return train_candidate(model, **overrides)

    @task
    def evaluate(version: str) -> dict:
        """Candidate and current model on the same held-out data and labelled scenarios."""
        from anomaly_detection.retraining import evaluate_candidate

        return evaluate_candidate(version)

    @task
    def promote(version: str, metrics: dict) -> bool:
        """Promote if not worse than the current model; records the decision in model_registry."""
        from anomaly_detection.retraining import promote_if_not_worse

        promoted = promote_if_not_worse(version, metrics)
        print(f"{version}: {'promoted' if promoted else 'kept the current model'}")
        return promoted

    for model in MODELS:
        version = train.override(task_id=f"train_{model}")(model)
        metrics = evaluate.override(task_id=f"evaluate_{model}")(version)
        promote.override(task_id=f"promote_{model}")(version, metrics)


retraining_dag()
