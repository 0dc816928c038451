"""data_quality_dag: every 6 hours, validate recent data and apply retention.

Validation (impossible values, window gaps, duplicate keys, dead-letter
growth) goes to `data_quality_results` and fails the run on a failed check;
retention deletes what is older than its layer's age (BRONZE_RETENTION_DAYS,
SILVER_RETENTION_DAYS, GOLD_RETENTION_DAYS; RETENTION_DAYS for operational
rows), rows and Parquet partitions, whatever validation found, then
checkpoints DuckDB. Logic lives in
`observability.quality`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="data_quality_dag",
    schedule="0 */6 * * *",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10), "execution_timeout": timedelta(minutes=30)},
    tags=["observability", "data-quality", "retention"],
    doc_md=__doc__,
)
def data_quality_dag():
    @task
    def validate() -> list[dict]:
        """Run the validation checks and append them to data_quality_results."""
        from observability import quality
        from observability.settings import get_settings
        from observability.store import Store

        settings = get_settings()
        store = Store.from_settings(settings)
        results = quality.run_validation(settings, store)
        quality.record(results, store)
        for r in results:
            print(f"{r.status:5s} {r.check_name:40s} {r.detail}")
        return [r.as_dict() for r in results]

    @task(retries=0)
    def fail_on_failed_checks(results: list[dict]) -> None:
        bad = [f"{r['check_name']} ({r['detail']})" for r in results if r["status"] == "fail"]
        if bad:
            raise RuntimeError("data quality checks failed: " + "; ".join(bad))

    @task
    def apply_retention() -> dict[str, int]:
        """Delete rows and bronze/silver/gold partitions past their layer's age; record the counts."""
        from observability import quality
        from observability.settings import get_settings
        from observability.store import Store, utcnow

        settings = get_settings()
        store = Store.from_settings(settings)
        now = utcnow()
        deleted = quality.apply_retention(settings, store, now)
        quality.record(quality.retention_results(deleted, quality.retention_cutoffs(settings, now)), store)
        return deleted

    @task
    def checkpoint(deleted: dict[str, int]) -> None:
        from observability import quality
        from observability.settings import get_settings
        from observability.store import Store

        quality.checkpoint(Store.from_settings(get_settings()))

    fail_on_failed_checks(validate())
    checkpoint(apply_retention())


data_quality_dag()
