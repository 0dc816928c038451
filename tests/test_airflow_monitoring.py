"""monitoring_dag and observability.health: real DuckDB, real HTTP servers, real Airflow runs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from observability import health, tables
from observability.settings import get_settings
from observability.store import utcnow
from tests.airflow_fixtures import closed_port, run_dag

COMPONENTS = {
    "transport",
    "spark",
    "service_metrics",
    "detector",
    "narrator",
    "narration_backlog",
    "layer_queue",
    "model_server",
    "dashboard",
}


def by_component(results) -> dict[str, health.CheckResult]:
    return {r.component: r for r in results}


def test_grade_age_boundaries():
    assert health.grade_age(0, 60) == "healthy"
    assert health.grade_age(60, 60) == "healthy"
    assert health.grade_age(61, 60) == "degraded"
    assert health.grade_age(180, 60) == "degraded"
    assert health.grade_age(181, 60) == "unhealthy"
    assert health.grade_age(None, 60) == "unhealthy"


def test_empty_platform_is_unhealthy_everywhere_without_raising(settings, store, monkeypatch):
    monkeypatch.setenv("OLLAMA_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("DASHBOARD_PORT", str(closed_port()))
    get_settings.cache_clear()
    results = by_component(health.run_all_checks(get_settings(), store))
    assert set(results) == COMPONENTS
    for name in COMPONENTS - {"narration_backlog", "layer_queue"}:
        assert results[name].status == "unhealthy", results[name]
    assert results["narration_backlog"].status == "healthy"  # nothing to summarise
    assert results["layer_queue"].status == "healthy"  # nothing committed, nothing to write
    assert "does not exist" in results["transport"].detail
    assert "unreachable" in results["model_server"].detail


def test_all_checks_healthy_on_a_live_platform(live_platform, store):
    results = by_component(health.run_all_checks(live_platform, store))
    assert {n: r.status for n, r in results.items()} == {n: "healthy" for n in COMPONENTS}
    assert "0.6.3" in results["model_server"].detail
    assert results["model_server"].latency_ms is not None and results["dashboard"].latency_ms is not None
    assert "backlog=0" in results["narrator"].detail


def test_stale_heartbeat_degrades_then_fails(settings, store):
    now = utcnow()
    limit = settings.health_heartbeat_max_age_seconds
    for age, expected in ((limit - 5, "healthy"), (2 * limit, "degraded"), (4 * limit, "unhealthy")):
        store.execute(
            f"INSERT OR REPLACE INTO {tables.HEARTBEATS} VALUES ('detector', ?, '')", [now - timedelta(seconds=age)]
        )
        assert health.check_detector(settings, store, now).status == expected, age


def test_spark_without_input_is_degraded_while_its_heartbeat_is_fresh(settings, store):
    now = utcnow()
    store.execute(
        f"INSERT INTO {tables.STREAM_PROGRESS} (batch_id, processed_at, rows_in, rows_rejected, rows_late) "
        "VALUES (3, ?, 10, 0, 0)",
        [now - timedelta(hours=2)],
    )
    assert health.check_spark_progress(settings, store, now).status == "unhealthy"
    store.heartbeat("spark", "running")
    result = health.check_spark_progress(settings, store, utcnow())
    assert result.status == "degraded" and "no new input" in result.detail


def test_narration_backlog_counts_incidents_changed_since_their_latest_summary(settings, store):
    from tests.seeding import seed_incident

    now = utcnow()
    summarised = seed_incident(store, "checkout", now - timedelta(hours=1))
    changed = seed_incident(store, "payments", now - timedelta(hours=1))
    seed_incident(store, "search", now - timedelta(hours=1))  # never summarised
    store.executemany(
        f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
        "VALUES (?, ?, 'x', ?, 's', 'template', '{}')",
        [["s1", summarised, now + timedelta(seconds=1)], ["s2", changed, now - timedelta(hours=2)]],
    )
    backlog, oldest = health.narration_backlog(store)
    assert backlog == 2
    store.execute(
        f"UPDATE {tables.INCIDENTS} SET updated_at = ? WHERE id <> ?",
        [now - timedelta(seconds=4 * settings.health_narration_max_age_seconds), summarised],
    )
    result = health.check_narration_backlog(settings, store, now)
    assert result.status == "unhealthy" and result.detail.startswith("2 incidents waiting")


def test_kafka_transport_unreachable_is_unhealthy(settings, store, monkeypatch):
    monkeypatch.setenv("TRANSPORT", "kafka")
    monkeypatch.setenv("KAFKA_BROKER", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HEALTH_HTTP_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    start = time.monotonic()
    result = health.check_transport(get_settings(), store, utcnow())
    assert result.status == "unhealthy" and "unreachable" in result.detail
    assert "Configuration" not in result.detail, result.detail  # unreachable for the right reason
    assert time.monotonic() - start < 15


@pytest.mark.kafka
def test_kafka_transport_reachable_against_a_real_broker(settings, store, monkeypatch, request):
    bootstrap = request.getfixturevalue("kafka_broker")
    monkeypatch.setenv("TRANSPORT", "kafka")
    monkeypatch.setenv("KAFKA_BROKER", bootstrap)
    # topic names of this test only: the session's broker is shared
    for var in ("KAFKA_RAW_EVENTS_TOPIC", "KAFKA_AGGREGATED_TOPIC", "KAFKA_ANOMALIES_TOPIC", "KAFKA_DEAD_LETTER_TOPIC"):
        monkeypatch.setenv(var, f"health-{var.lower()}")
    get_settings.cache_clear()
    kafka_settings = get_settings()
    missing = health.check_transport(kafka_settings, store, utcnow())
    assert missing.status == "degraded" and "topics missing" in missing.detail, missing
    from observability.transport import create_topics

    create_topics(kafka_settings)
    ok = health.check_transport(kafka_settings, store, utcnow())
    assert ok.status == "healthy" and bootstrap in ok.detail and ok.latency_ms is not None


def test_record_writes_health_checks_rows(settings, store):
    results = [
        health.CheckResult("spark", "healthy", "ok", None),
        health.CheckResult("dashboard", "unhealthy", "down", 3.5),
    ]
    assert health.record(results, store) == 2
    rows = store.fetch_all(
        f"SELECT component, status, detail, latency_ms FROM {tables.HEALTH_CHECKS} ORDER BY component"
    )
    assert rows == [("dashboard", "unhealthy", "down", 3.5), ("spark", "healthy", "ok", None)]


# -- the DAG -----------------------------------------------------------------------------
def test_monitoring_dag_passes_when_all_components_are_up(dagbag, live_platform, store):
    state, tis = run_dag(dagbag, "monitoring_dag")
    assert state == "success", tis
    rows = store.fetch_all(f"SELECT component, status FROM {tables.HEALTH_CHECKS}")
    assert dict(rows) == {n: "healthy" for n in COMPONENTS}


@pytest.mark.parametrize("down", ["model_server", "detector"])
def test_monitoring_dag_fails_when_a_component_is_down(dagbag, live_platform, store, monkeypatch, down):
    if down == "model_server":
        monkeypatch.setenv("OLLAMA_URL", f"http://127.0.0.1:{closed_port()}")
        get_settings.cache_clear()
    else:
        store.execute(
            f"UPDATE {tables.HEARTBEATS} SET last_seen = ? WHERE component = 'detector'",
            [utcnow() - timedelta(hours=1)],
        )
    state, tis = run_dag(dagbag, "monitoring_dag")
    assert state == "failed"
    assert tis == {"check_components": "success", "fail_on_unhealthy": "failed"}
    rows = dict(store.fetch_all(f"SELECT component, status FROM {tables.HEALTH_CHECKS}"))
    assert rows[down] == "unhealthy"
    assert {n for n, s in rows.items() if s != "healthy"} == {down}
