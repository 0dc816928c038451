"""monitoring_dag: every 5 minutes, check each component and record it in `health_checks`.

The run fails when a component is unhealthy, so Airflow shows it; the checks
themselves live in `observability.health` (shared with `make health` and the
dashboard).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="monitoring_dag",
    schedule="*/5 * * * *",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=4),
    default_args={"retries": 0, "execution_timeout": timedelta(minutes=2)},
    tags=["observability", "health"],
    doc_md=__doc__,
)
def monitoring_dag():
    @task
    def check_components() -> list[dict]:
        """Run every component check and append the results to health_checks."""
        from observability.health import record, run_all_checks
        from observability.settings import get_settings
        from observability.store import Store

        settings = get_settings()
        store = Store.from_settings(settings)
        results = run_all_checks(settings, store)
        record(results, store)
        for r in results:
            print(f"{r.status:9s} {r.component:18s} {r.detail}")
        return [r.as_dict() for r in results]

    @task
    def fail_on_unhealthy(results: list[dict]) -> None:
        """Fail the run, naming each unhealthy component."""
        bad = [f"{r['component']} ({r['detail']})" for r in results if r["status"] == "unhealthy"]
        if bad:
            raise RuntimeError("unhealthy components: " + "; ".join(bad))

    fail_on_unhealthy(check_components())


monitoring_dag()
