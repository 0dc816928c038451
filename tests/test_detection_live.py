"""Live, incremental detection on real DuckDB files: one window per service per cycle, restarts
between cycles, a backlog longer than one chunk, model bootstrap, services that go silent.

Each `DetectionService` below is a fresh detector process as far as state goes (everything it
knows comes from the store), so a new instance per cycle is a restart.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd

from anomaly_detection import service as detection
from anomaly_detection.detectors import MODEL_KINDS
from anomaly_detection.service import DetectionService
from observability import tables
from observability.settings import Settings
from observability.store import Store
from tests.detection_fixtures import START, seed_cascade, set_watermark
from tests.seeding import metrics_frame, seed_metrics
from tests.test_detection_once import run_once

SERVICES = 5
LOW_PAIR = ((240, 1.33), (241, 1.37))  # search's p95 and mean latency x these: two low-severity windows in a row


def at(minute: int):
    return START + timedelta(minutes=minute)


def slow_down(store: Store, service: str, minute: int, factor: float) -> None:
    store.execute(
        f"UPDATE {tables.SERVICE_METRICS} SET p95_latency_ms = p95_latency_ms * ?, avg_latency_ms = avg_latency_ms * ? "
        "WHERE service = ? AND window_start = ?",
        [factor, factor, service, at(minute)],
    )


def seeded(data_dir, watermark: int) -> tuple[Settings, Store]:
    """250 minutes of 5 services: a database cascade at 225-230 and two low windows of search at 240-241."""
    settings = Settings(DATA_DIR=data_dir)
    store = Store.from_settings(settings)
    store.migrate()
    seed_cascade(store, minutes=250, fault=(225, 230), watermark_minute=watermark)
    for minute, factor in LOW_PAIR:
        slow_down(store, "search", minute, factor)
    return settings, store


def outcome(store: Store) -> tuple[list, list]:
    anomalies = store.fetch_all(
        f"SELECT service, window_start, anomaly_type, severity, score FROM {tables.ANOMALIES} ORDER BY window_start, service"
    )
    incidents = store.fetch_all(
        f"""SELECT id, service, started_at, ended_at, status, peak_severity, root_cause_service, list_sort(related_services)
            FROM {tables.INCIDENTS} ORDER BY started_at, service"""
    )
    return anomalies, incidents


def test_one_window_per_cycle_with_restarts_finds_what_one_batch_run_finds(tmp_path):
    batch_settings, batch = seeded(tmp_path / "batch", watermark=250)
    DetectionService(batch_settings, batch, bootstrap_models=False, publish=False).run_once()
    lows = batch.fetch_all(
        f"SELECT window_start, severity FROM {tables.ANOMALIES} WHERE service = 'search' ORDER BY window_start"
    )
    assert lows == [(at(240), "low"), (at(241), "low")], "precondition: the seeded pair scores low, low"

    settings, live = seeded(tmp_path / "live", watermark=220)
    detector = DetectionService(settings, live, bootstrap_models=False, publish=False)
    assert detector.run_once().windows == 220 * SERVICES  # the backlog first
    for minute in range(221, 251):
        set_watermark(live, minute, batch_id=minute)
        if minute % 3 == 0:  # a restart: nothing carried in memory
            detector = DetectionService(settings, live, bootstrap_models=False, publish=False)
        result = detector.run_once()
        assert result.windows == SERVICES, f"minute {minute}: one final window per service"
        if minute == 242:
            search = live.fetch_df(f"SELECT * FROM {tables.INCIDENTS} WHERE service = 'search'")
            assert len(search) == 1 and search.started_at[0] == at(240) and search.peak_severity[0] == "low", (
                "the second low window, scored one cycle after the first, opens the incident"
            )

    assert outcome(live) == outcome(batch)
    incidents = live.fetch_df(f"SELECT * FROM {tables.INCIDENTS} ORDER BY started_at, service")
    assert list(incidents.service) == ["checkout", "search"], (
        "the cascade is one correlated incident, seen at the entry"
    )
    assert sorted(incidents.related_services[0]) == ["database", "inventory"]
    assert (incidents.status == "resolved").all()


def test_a_backlog_longer_than_a_chunk_bootstraps_models_then_scores_live(store, settings):
    seed_cascade(
        store, minutes=420, fault=(355, 365), watermark_minute=400
    )  # the fault straddles the 360-minute chunk edge
    assert detection.CHUNK_MINUTES < 400 and detection.MIN_BOOTSTRAP_WINDOWS <= 400
    detector = DetectionService(settings, store, publish=False)
    first = detector.run_once()
    assert first.windows == 400 * SERVICES
    assert set(first.models) == set(MODEL_KINDS), "hours of history: a first model of each kind is trained and promoted"
    promoted = store.fetch_df(f"SELECT model, version FROM {tables.MODEL_REGISTRY} WHERE promoted")
    assert dict(zip(promoted.model, promoted.version, strict=True)) == first.models

    incidents = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} ORDER BY service")
    assert list(incidents.service) == ["checkout"], "one correlated incident for the fault across the chunk edge"
    assert sorted(incidents.related_services[0]) == ["database", "inventory"]
    assert (
        (incidents.started_at < at(detection.CHUNK_MINUTES)) & (incidents.ended_at > at(detection.CHUNK_MINUTES))
    ).all()
    assert (incidents.status == "resolved").all() and (incidents.ended_at == at(366)).all()
    marks = dict(store.fetch_all(f"SELECT service, last_window_start FROM {tables.DETECTOR_PROGRESS}"))
    assert marks == {s: at(399) for s in ("checkout", "payments", "search", "inventory", "database")}

    slow_down(store, "payments", 403, 6.0)
    for minute in range(401, 406):
        set_watermark(store, minute, batch_id=minute)
        result = detector.run_once()
        assert result.windows == SERVICES and result.models == first.models
    hit = store.fetch_df(
        f"SELECT * FROM {tables.ANOMALIES} WHERE service = 'payments' AND window_start >= ?", [at(400)]
    )
    assert list(hit.window_start) == [at(403)]
    assert set(json.loads(hit.detectors[0])) == {"rules", "robust_stats", *MODEL_KINDS}, (
        "the promoted models score live windows"
    )


def test_a_service_that_stops_sending_raises_a_traffic_drop_until_it_is_back(store, data_dir):
    seed_metrics(store, start=START, minutes=240, seed=7)
    store.execute(f"DELETE FROM {tables.SERVICE_METRICS} WHERE service = 'payments' AND window_start >= ?", [at(220)])
    set_watermark(store, 240, batch_id=1)
    assert "detector summary:" in run_once(data_dir)

    silent = store.fetch_df(f"SELECT * FROM {tables.ANOMALIES} WHERE service = 'payments' ORDER BY window_start")
    assert len(silent), "a steady service that sends nothing is flagged"
    first = silent.window_start.min()
    assert at(220) < first <= at(222), "within three minutes of silence"
    assert list(silent.window_start) == list(pd.date_range(first, at(239), freq="1min")), (
        "every silent minute after that"
    )
    assert set(silent.anomaly_type) == {"traffic_drop"}
    assert all(set(json.loads(d)) == {"silence"} for d in silent.detectors)
    assert all(json.loads(o)["request_count"] == 0 for o in silent.observed)
    assert silent.severity.iloc[-1] == "critical"
    others = store.fetch_one(f"SELECT count(*) FROM {tables.ANOMALIES} WHERE service <> 'payments'")[0]
    assert others == 0, "services that keep sending are not flagged"

    inc = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} WHERE service = 'payments'")
    assert len(inc) == 1 and inc.status[0] == "open" and inc.started_at[0] == first and pd.isna(inc.ended_at[0])

    back = metrics_frame(start=START, minutes=260, seed=7)
    back = back[(back.service == "payments") & (back.window_start >= at(240))]
    store.insert_df(tables.SERVICE_METRICS, back, upsert=True)
    set_watermark(store, 260, batch_id=2)
    run_once(data_dir)
    inc = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} WHERE service = 'payments'")
    assert inc.status[0] == "resolved" and inc.ended_at[0] == at(240), (
        "resolved once it sends again: end of the last silent minute"
    )
    assert store.fetch_one(f"SELECT max(window_start) FROM {tables.ANOMALIES} WHERE service = 'payments'")[0] == at(239)


def sparse_rows(minutes: range, errors_at: int) -> pd.DataFrame:
    """A batch service: one burst of 200 requests every 10 minutes; 40 % errors in the burst at `errors_at`."""
    rows = []
    for m in minutes:
        err = 80 if m == errors_at else 2
        rows.append(
            dict(
                window_start=at(m),
                window_end=at(m + 1),
                service="batch",
                request_count=200,
                error_count=err,
                client_error_count=0,
                error_rate=err / 200,
                avg_latency_ms=50.0,
                p50_latency_ms=45.0,
                p95_latency_ms=100.0,
                p99_latency_ms=150.0,
                max_latency_ms=250.0,
                updated_at=at(m + 1),
            )
        )
    return pd.DataFrame(rows)


def test_an_open_incident_resolves_on_time_though_its_service_sends_nothing_more(store, settings):
    seed_metrics(store, start=START, minutes=240, seed=7)
    store.insert_df(
        tables.SERVICE_METRICS, sparse_rows(range(0, 201, 10), errors_at=200), upsert=True
    )  # nothing after 200
    detector = DetectionService(settings, store, bootstrap_models=False, publish=False)
    set_watermark(store, 203, batch_id=1)
    detector.run_once()
    inc = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} WHERE service = 'batch'")
    assert len(inc) == 1 and inc.status[0] == "open" and inc.started_at[0] == at(200), (
        "precondition: the burst opens an incident"
    )

    set_watermark(store, 205, batch_id=2)
    detector.run_once()
    assert store.fetch_one(f"SELECT status FROM {tables.INCIDENTS} WHERE service = 'batch'")[0] == "open", (
        "4 quiet minutes"
    )
    set_watermark(store, 206, batch_id=3)
    detector.run_once()
    inc = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} WHERE service = 'batch'")
    assert inc.status[0] == "resolved" and inc.ended_at[0] == at(201), (
        "5 quiet minutes after its last anomaly, windows or not"
    )
    set_watermark(store, 240, batch_id=4)
    detector.run_once()
    gaps = store.fetch_one(
        f"SELECT count(*) FROM {tables.ANOMALIES} WHERE service = 'batch' AND anomaly_type = 'traffic_drop'"
    )[0]
    assert gaps == 0, "a service that usually sends every 10 minutes is not flagged for 40 minutes of silence"


def test_a_long_gone_service_does_not_send_the_detector_back_through_empty_chunks(store, settings):
    seed_metrics(store, start=START, minutes=60, seed=7)
    set_watermark(store, 60, batch_id=1)
    store.execute(
        f"INSERT INTO {tables.DETECTOR_PROGRESS} VALUES ('retired', ?, ?)", [START - timedelta(days=30), START]
    )
    detector = DetectionService(settings, store, bootstrap_models=False, publish=False)
    chunks = []
    score_chunk = detector._score_chunk
    detector._score_chunk = lambda *args: chunks.append(args[3]) or score_chunk(*args)  # counts, then the real work
    assert detector.run_once().windows == 60 * SERVICES
    assert chunks == [START], "one chunk from the first unscored window, not 120 from a month-old mark"
    assert store.fetch_one(f"SELECT last_window_start FROM {tables.DETECTOR_PROGRESS} WHERE service = 'retired'")[
        0
    ] == at(59)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.ANOMALIES}")[0] == 0


def _progress(store: Store, batch_id: int, newest, watermark) -> None:
    store.execute(
        f"INSERT OR REPLACE INTO {tables.STREAM_PROGRESS} VALUES (?, ?, 0, 0, 0, ?, ?)",
        [batch_id, newest, newest, watermark],
    )


def test_the_detection_horizon_is_the_settled_minute_behind_the_newest_event_or_the_watermark(store):
    """Issue 17: a window is scored DETECT_SETTLE_SECONDS after the stream's newest event passed its
    end, not a WATERMARK_SECONDS later; never ahead of the wall clock; never behind the watermark."""
    from anomaly_detection.data import detection_horizon

    now = at(203) + timedelta(seconds=11)
    assert detection_horizon(store, 5, 60, now) is None, "no stream yet: nothing is final"
    _progress(store, 1, at(203) + timedelta(seconds=10), at(202) + timedelta(seconds=10))
    assert detection_horizon(store, 5, 60, now) == at(203)
    assert detection_horizon(store, 15, 60, now) == at(202) + timedelta(seconds=10), "the watermark when later"
    assert detection_horizon(store, 5, 60, now + timedelta(minutes=2)) == at(202) + timedelta(seconds=10), (
        "not live (a backlog, a replay): the watermark only"
    )
    _progress(store, 2, at(203) + timedelta(days=1), at(202) + timedelta(seconds=10))  # a clock a day ahead
    assert detection_horizon(store, 5, 60, at(204) + timedelta(seconds=20)) == at(204), "capped at the wall clock"


def test_a_live_window_is_scored_once_settled_before_the_watermark_closes_it(store, settings):
    seed_metrics(store, start=START, minutes=60, seed=7)
    set_watermark(store, 40, batch_id=1)
    detector = DetectionService(settings, store, bootstrap_models=False, publish=False)
    detector.now = lambda: at(46) + timedelta(seconds=7)  # the stream is live
    assert detector.run_once().windows == 40 * SERVICES
    # the newest event is 6 s into minute 46: minutes up to 46 are settled, the watermark is still at 40
    _progress(store, 2, at(46) + timedelta(seconds=6), at(40))
    watermark_only = DetectionService(
        Settings(DATA_DIR=settings.data_dir, DETECT_SETTLE_SECONDS=3600), store, bootstrap_models=False, publish=False
    )
    watermark_only.now = detector.now
    assert watermark_only.run_once().windows == 0
    assert detector.run_once().windows == 6 * SERVICES, "windows 40-45 scored before the watermark passed them"
    marks = set(store.fetch_df(f"SELECT last_window_start FROM {tables.DETECTOR_PROGRESS}").last_window_start)
    assert marks == {at(45)}, "every service judged through the last settled minute"
    # rows arriving later for a scored window refine the aggregate but are not scored again
    _progress(store, 3, at(46) + timedelta(seconds=50), at(41))
    detector.now = lambda: at(46) + timedelta(seconds=51)
    assert detector.run_once().windows == 0


def test_the_continuous_loop_cycles_when_a_minute_becomes_final_and_at_least_every_interval():
    from anomaly_detection.cli import WhenFinal
    from observability.store import StoreBusy

    now, horizon, runs = [0.0], [at(10) + timedelta(seconds=30)], []

    def read():
        if isinstance(horizon[0], Exception):
            raise horizon[0]
        return horizon[0]

    gate = WhenFinal(lambda: runs.append(now[0]) or len(runs), read, interval=15, clock=lambda: now[0])
    assert gate() == 1, "the first poll runs a cycle"
    now[0], horizon[0] = 1, at(10) + timedelta(seconds=50)
    assert gate() is None, "same minute, interval not over: one read, no cycle"
    now[0], horizon[0] = 2, at(11)
    assert gate() == 2, "a new minute is final: cycle at once"
    now[0] = 17
    assert gate() == 3, "nothing new, but the interval passed (heartbeat, retraining, silence)"
    now[0], horizon[0] = 18, StoreBusy("locked")
    assert gate() == 4, "a failed read: the cycle runs and reports the failure its own way"
    assert runs == [0, 2, 17, 18]
