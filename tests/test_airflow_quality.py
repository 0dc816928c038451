"""data_quality_dag and observability.quality: validation and retention on a real DuckDB."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pandas as pd

from observability import bronze, quality, tables
from observability.store import utcnow
from tests.airflow_fixtures import run_dag
from tests.seeding import metrics_frame, seed_incident, seed_metrics


def results_by_name(results) -> dict[str, quality.QualityResult]:
    return {r.check_name: r for r in results}


def test_clean_data_passes_every_check(settings, store):
    seed_metrics(store, minutes=120)
    results = quality.run_validation(settings, store)
    assert {r.status for r in results} == {"pass"}, [r for r in results if r.status != "pass"]
    names = set(results_by_name(results))
    assert {"window_gaps", "dead_letter_growth", "duplicate_keys:anomalies"} <= names
    assert {f"impossible_values:{rule}" for rule in quality.IMPOSSIBLE_VALUE_RULES} <= names


def test_impossible_values_are_counted_per_rule(settings, store):
    df = seed_metrics(store, minutes=60, services=("checkout", "payments"))
    bad = df.iloc[:5].copy()
    bad["service"] = [f"bad{i}" for i in range(5)]
    bad.loc[bad.index[0], "error_count"] = bad.loc[bad.index[0], "request_count"] + 1  # errors > requests
    bad.loc[bad.index[1], "error_rate"] = 1.5  # rate out of range
    bad.loc[bad.index[2], "p50_latency_ms"] = bad.loc[bad.index[2], "p95_latency_ms"] + 1  # p50 > p95
    bad.loc[bad.index[3], "avg_latency_ms"] = -1.0  # negative latency
    bad.loc[bad.index[4], "request_count"] = -3  # negative count (and errors > requests)
    store.insert_df(tables.SERVICE_METRICS, bad)
    r = results_by_name(quality.run_validation(settings, store))
    assert r["impossible_values:errors_exceed_requests"].observed == 2
    assert r["impossible_values:error_rate_out_of_range"].observed == 1
    assert r["impossible_values:percentile_order"].observed == 1
    assert r["impossible_values:negative_latency"].observed == 1
    assert r["impossible_values:negative_counts"].observed == 1
    assert all(v.status == "fail" for k, v in r.items() if k.startswith("impossible_values:"))
    quality.record(list(r.values()), store)
    fails = store.fetch_all(f"SELECT check_name FROM {tables.DATA_QUALITY_RESULTS} WHERE status = 'fail' ORDER BY 1")
    assert [f[0] for f in fails] == sorted(k for k in r if k.startswith("impossible_values:"))


def test_window_gaps_warn_then_fail_by_ratio(settings, store):
    seed_metrics(store, minutes=100, services=("checkout", "payments"))
    first = store.fetch_one(f"SELECT min(window_start) FROM {tables.SERVICE_METRICS}")[0]
    # 2 of 100 windows missing inside checkout's range: a warning (2% <= 5%)
    store.execute(
        f"DELETE FROM {tables.SERVICE_METRICS} WHERE service = 'checkout' AND window_start IN (?, ?)",
        [first + timedelta(minutes=10), first + timedelta(minutes=11)],
    )
    gaps = quality.check_window_gaps(store, first - timedelta(minutes=1), 0.05)
    assert (gaps.status, gaps.observed) == ("warn", 2) and "checkout=2" in gaps.detail and "payments" not in gaps.detail
    store.execute(
        f"DELETE FROM {tables.SERVICE_METRICS} WHERE service = 'payments' AND window_start BETWEEN ? AND ?",
        [first + timedelta(minutes=20), first + timedelta(minutes=29)],
    )
    gaps = quality.check_window_gaps(store, first - timedelta(minutes=1), 0.05)
    assert (gaps.status, gaps.observed) == ("fail", 12) and "worst payments 10.0%" in gaps.detail


def test_duplicate_anomalies_fail(settings, store):
    seed_metrics(store, minutes=30, services=("checkout",))
    start = (utcnow() - timedelta(minutes=20)).replace(second=0, microsecond=0)
    seed_incident(store, "checkout", start, minutes=3)
    seed_incident(store, "checkout", start + timedelta(minutes=1), minutes=1)  # same window and type again
    r = results_by_name(quality.run_validation(settings, store))
    assert (r["duplicate_keys:anomalies"].status, r["duplicate_keys:anomalies"].observed) == ("fail", 1)
    assert r["duplicate_keys:service_metrics"].status == "pass"


def test_dead_letter_growth_and_ratio(settings, store):
    seed_metrics(store, minutes=60, services=("checkout",))  # about 300 requests a minute
    now = utcnow()

    def dead_letters(n, at):
        store.executemany(
            f"INSERT INTO {tables.DEAD_LETTER} VALUES (?, 'spark:raw_events', 'bad json', '{{')", [[at]] * n
        )

    dead_letters(5, now - timedelta(hours=7))
    dead_letters(5, now - timedelta(minutes=30))
    assert quality.check_dead_letter_growth(store, now - timedelta(hours=6), now, 0.05).status == "pass"
    dead_letters(20, now - timedelta(minutes=20))  # 25 now against 5 before: growing
    r = quality.check_dead_letter_growth(store, now - timedelta(hours=6), now, 0.05)
    assert (r.status, r.observed) == ("warn", 25)
    dead_letters(2000, now - timedelta(minutes=10))  # more than 5% of all events
    assert quality.check_dead_letter_growth(store, now - timedelta(hours=6), now, 0.05).status == "fail"


# -- retention ------------------------------------------------------------------------------
NOW = datetime(2026, 6, 10, 12, 30)  # RETENTION_DAYS=7 -> cutoff 2026-06-03 12:30
CUTOFF = datetime(2026, 6, 3, 12, 30)
JUST = timedelta(minutes=1)


def seed_around_cutoff(settings, store, cutoff: datetime) -> None:
    """Rows just older and just newer than the cutoff in every table retention covers."""
    old, new = cutoff - JUST, cutoff + JUST
    old_m = metrics_frame(services=("checkout",), start=old.replace(second=0), minutes=1)
    new_m = metrics_frame(services=("checkout",), start=new.replace(second=0), minutes=1)
    for df in (old_m, new_m):
        store.insert_df(tables.SERVICE_METRICS, df)
        store.insert_df(tables.ENDPOINT_METRICS, df.assign(endpoint="/pay"))
    for label, t in (("old", old), ("new", new)):
        store.execute(f"INSERT INTO {tables.TRACE_SAMPLES} VALUES (?, 'checkout', ?, 'error')", [t, f"trace-{label}"])
        store.execute(f"INSERT INTO {tables.SERVICE_DEPENDENCIES} VALUES (?, 'checkout', 'payments', 3, 0)", [t])
        store.execute(f"INSERT INTO {tables.DEAD_LETTER} VALUES (?, 'test', 'bad', ?)", [t, label])
        store.execute(f"INSERT INTO {tables.HEALTH_CHECKS} VALUES (?, 'spark', 'healthy', ?, NULL)", [t, label])
        store.execute(
            f"INSERT INTO {tables.LOGS} (timestamp, service, severity_text, body) VALUES (?, 'checkout', 'ERROR', ?)",
            [t, label],
        )
        store.execute(
            f"INSERT INTO {tables.OTEL_METRICS} (timestamp, service, name, kind, value) "
            "VALUES (?, 'checkout', ?, 'gauge', 1.0)",
            [t, label],
        )
        store.execute(f"INSERT INTO {tables.DATA_QUALITY_RESULTS} VALUES (?, 'x', 'pass', 0, ?)", [t, label])
        store.execute(
            f"INSERT INTO {tables.ANOMALIES} (id, service, window_start, window_end, detected_at, anomaly_type, "
            "severity, score) VALUES (?, 'checkout', ?, ?, ?, 'error_surge', 'high', 0.9)",
            [f"anomaly-{label}", t, t + JUST, t],
        )
        store.execute(
            f"INSERT INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity, "
            "root_cause_service, related_services, updated_at) "
            "VALUES (?, 'checkout', ?, ?, 'resolved', 'high', 'checkout', [], ?)",
            [f"incident-{label}", t - JUST, t, t],
        )
        store.execute(
            f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
            "VALUES (?, ?, 'checkout', ?, 's', 'template', '{}')",
            [f"summary-{label}", f"incident-{label}", t],
        )
    # the kept incident also has an older summary, superseded by the newer one: it goes
    store.execute(
        f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
        "VALUES ('summary-superseded', 'incident-new', 'checkout', ?, 's', 'template', '{}')",
        [old],
    )
    store.executemany(f"INSERT INTO {tables.STREAM_PROGRESS} VALUES (?, ?, 10, 0, 0, NULL, NULL)", [[1, old], [2, new]])
    # bronze: the hour before the cutoff's hour has wholly expired, the cutoff's own hour has not
    events = pd.DataFrame(
        {
            "event_id": [uuid.uuid4().hex for _ in range(4)],
            "timestamp": [cutoff - timedelta(hours=13), cutoff - timedelta(minutes=31), cutoff - JUST, cutoff + JUST],
            "service": "checkout",
            "endpoint": "/pay",
            "status_code": 200,
            "latency_ms": 12.0,
        }
    )
    bronze.write_events(settings.bronze_dir, events)


def surviving_labels(store) -> dict[str, set]:
    q = {
        tables.TRACE_SAMPLES: "trace_id",
        tables.DEAD_LETTER: "payload",
        tables.HEALTH_CHECKS: "detail",
        tables.DATA_QUALITY_RESULTS: "detail",
        tables.LOGS: "body",
        tables.OTEL_METRICS: "name",
        tables.ANOMALIES: "id",
        tables.INCIDENTS: "id",
        tables.INCIDENT_SUMMARIES: "id",
        tables.STREAM_PROGRESS: "batch_id",
        tables.SERVICE_METRICS: "window_start",
        tables.ENDPOINT_METRICS: "window_start",
        tables.SERVICE_DEPENDENCIES: "window_start",
    }
    return {t: {r[0] for r in store.fetch_all(f"SELECT {c} FROM {t}")} for t, c in q.items()}


def one_age(settings, days: int = 7):
    """Every layer at the same age, so one cutoff tests every table's boundary."""
    return settings.model_copy(
        update=dict(
            retention_days=days, bronze_retention_days=days, silver_retention_days=days, gold_retention_days=days
        )
    )


def test_retention_deletes_exactly_what_expired(settings, store):
    settings = one_age(settings)
    assert quality.retention_cutoff(settings, NOW) == CUTOFF
    seed_around_cutoff(settings, store, CUTOFF)
    deleted = quality.apply_retention(settings, store, NOW)
    left = surviving_labels(store)
    new_minute = (CUTOFF + JUST).replace(second=0)
    assert left[tables.SERVICE_METRICS] == {new_minute} and left[tables.ENDPOINT_METRICS] == {new_minute}
    assert left[tables.SERVICE_DEPENDENCIES] == {CUTOFF + JUST}
    assert left[tables.TRACE_SAMPLES] == {"trace-new"}
    for t in (tables.DEAD_LETTER, tables.HEALTH_CHECKS, tables.DATA_QUALITY_RESULTS, tables.LOGS, tables.OTEL_METRICS):
        assert left[t] == {"new"}, t
    assert left[tables.ANOMALIES] == {"anomaly-new"}
    assert left[tables.INCIDENTS] == {"incident-new"}
    assert left[tables.INCIDENT_SUMMARIES] == {"summary-new"}
    assert left[tables.STREAM_PROGRESS] == {2}
    partitions = sorted(str(p.relative_to(settings.bronze_dir)) for p in settings.bronze_dir.glob("date=*/hour=*"))
    assert partitions == ["date=2026-06-03/hour=12"]
    assert deleted["bronze_partitions"] == 2 and deleted[tables.INCIDENT_SUMMARIES] == 2
    assert not (settings.bronze_dir / "date=2026-06-02").exists()  # emptied date folder removed
    # the kept partition still holds both of its events (partitions go whole)
    assert len(bronze.read_events(settings.bronze_dir, CUTOFF - timedelta(hours=1), CUTOFF + timedelta(hours=1))) == 2
    # idempotent: a rerun deletes nothing more
    again = quality.apply_retention(settings, store, NOW)
    assert set(again.values()) == {0}
    quality.checkpoint(store)


def test_retention_keeps_the_newest_progress_row_and_latest_summary_of_kept_incident(settings, store):
    settings = one_age(settings)
    old = CUTOFF - timedelta(days=2)
    store.executemany(f"INSERT INTO {tables.STREAM_PROGRESS} VALUES (?, ?, 10, 0, 0, NULL, NULL)", [[1, old], [2, old]])
    store.execute(
        f"INSERT INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity, "
        "root_cause_service, related_services, updated_at) "
        "VALUES ('i', 'checkout', ?, NULL, 'open', 'high', 'checkout', [], ?)",
        [old, CUTOFF + JUST],
    )
    store.execute(
        f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
        "VALUES ('only', 'i', 'checkout', ?, 's', 'template', '{}')",
        [old],
    )
    quality.apply_retention(settings, store, NOW)
    assert store.fetch_all(f"SELECT batch_id FROM {tables.STREAM_PROGRESS}") == [(2,)]
    assert store.fetch_all(f"SELECT id FROM {tables.INCIDENT_SUMMARIES}") == [("only",)]


def test_each_layer_keeps_its_own_age(settings, store):
    """Defaults: bronze 7 days, silver 90, gold 365, operational rows RETENTION_DAYS (7)."""
    assert (settings.bronze_retention_days, settings.silver_retention_days, settings.gold_retention_days) == (
        7,
        90,
        365,
    )
    month_old, two_years_old = NOW - timedelta(days=30), NOW - timedelta(days=730)
    for t in (month_old, two_years_old):
        store.insert_df(
            tables.SERVICE_METRICS, metrics_frame(services=("checkout",), start=t.replace(second=0), minutes=1)
        )
        store.execute(
            f"INSERT INTO {tables.ERROR_MESSAGES} VALUES (?, 'checkout', '/pay', 'timeout', 3, 'trace-x')", [t]
        )
        store.execute(
            f"INSERT INTO {tables.LOGS} (timestamp, service, severity_text, body) VALUES (?, 'checkout', 'ERROR', 'x')",
            [t],
        )
        store.execute(f"INSERT INTO {tables.DEAD_LETTER} VALUES (?, 'test', 'bad', 'x')", [t])
    for root, days in ((settings.silver_dir, (80, 100)), (settings.gold_dir / "traces", (300, 400))):
        for d in days:
            (root / f"date={NOW - timedelta(days=d):%Y-%m-%d}" / "service=checkout").mkdir(parents=True)
    deleted = quality.apply_retention(settings, store, NOW)
    # gold: the month-old window and its error text stay (a year), the two-year-old ones go
    assert store.fetch_all(f"SELECT window_start FROM {tables.SERVICE_METRICS}") == [(month_old.replace(second=0),)]
    assert store.fetch_all(f"SELECT window_start FROM {tables.ERROR_MESSAGES}") == [(month_old,)]
    # bronze logs and operational rows: a week
    assert store.fetch_one(f"SELECT count(*) FROM {tables.LOGS}")[0] == 0
    assert store.fetch_one(f"SELECT count(*) FROM {tables.DEAD_LETTER}")[0] == 0
    assert [p.name for p in settings.silver_dir.iterdir()] == [f"date={NOW - timedelta(days=80):%Y-%m-%d}"]
    assert [p.name for p in (settings.gold_dir / "traces").iterdir()] == [f"date={NOW - timedelta(days=300):%Y-%m-%d}"]
    assert (deleted["silver_partitions"], deleted["gold_partitions"], deleted[tables.ERROR_MESSAGES]) == (1, 1, 1)
    recorded = {
        r.check_name: r.detail for r in quality.retention_results(deleted, quality.retention_cutoffs(settings, NOW))
    }
    assert recorded["retention:error_messages"].endswith(f"{NOW - timedelta(days=365):%Y-%m-%d %H:%M}")
    assert recorded["retention:silver_partitions"].endswith(f"{NOW - timedelta(days=90):%Y-%m-%d %H:%M}")


# -- the DAG -----------------------------------------------------------------------------------
def test_data_quality_dag_validates_and_applies_retention(dagbag, settings, store):
    seed_metrics(store, minutes=90)
    now = utcnow()
    cutoff = now - timedelta(days=settings.gold_retention_days)  # aggregates are gold: a year
    expired = metrics_frame(services=("checkout",), start=(cutoff - timedelta(minutes=10)).replace(second=0), minutes=3)
    kept = metrics_frame(services=("checkout",), start=(cutoff + timedelta(minutes=5)).replace(second=0), minutes=3)
    store.insert_df(tables.SERVICE_METRICS, pd.concat([expired, kept]))
    old_silver = settings.silver_dir / f"date={now - timedelta(days=settings.silver_retention_days + 2):%Y-%m-%d}"
    old_silver.mkdir(parents=True)
    bronze_cutoff = now - timedelta(days=settings.bronze_retention_days)
    events = pd.DataFrame(
        {
            "event_id": ["a", "b"],
            "timestamp": [bronze_cutoff - timedelta(hours=1), bronze_cutoff + timedelta(hours=1)],
            "service": "checkout",
            "endpoint": "/pay",
            "status_code": 200,
            "latency_ms": 5.0,
        }
    )
    bronze.write_events(settings.bronze_dir, events)
    before = store.fetch_one(f"SELECT count(*) FROM {tables.SERVICE_METRICS}")[0]

    state, tis = run_dag(dagbag, "data_quality_dag")

    assert state == "success", tis
    assert set(tis.values()) == {"success"}
    after = store.fetch_one(f"SELECT count(*) FROM {tables.SERVICE_METRICS}")[0]
    assert before - after == 3
    oldest = store.fetch_one(f"SELECT min(window_start) FROM {tables.SERVICE_METRICS}")[0]
    assert oldest == kept["window_start"].min()
    left = bronze.read_events(
        settings.bronze_dir, bronze_cutoff - timedelta(hours=2), bronze_cutoff + timedelta(hours=2)
    )
    assert list(left["event_id"]) == ["b"]
    assert not old_silver.exists()
    recorded = dict(store.fetch_all(f"SELECT check_name, status FROM {tables.DATA_QUALITY_RESULTS}"))
    assert recorded["window_gaps"] == "pass" and recorded["impossible_values:percentile_order"] == "pass"
    assert (
        store.fetch_one(
            f"SELECT observed FROM {tables.DATA_QUALITY_RESULTS} WHERE check_name = 'retention:service_metrics'"
        )[0]
        == 3
    )
