"""End-to-end tests of `python -m spark.streaming_job` (run as a subprocess, real Spark + DuckDB)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly_detection.service import DetectionService
from observability.bronze import read_events
from observability.dead_letter import make_dead_letter
from observability.schema import format_timestamp
from observability.transport import create_producer, create_reader
from spark.checkpoint import batch_watermark_ms, committed_offsets
from spark.partials import LATENCY_SKETCH_K, PERCENTILE_RANK_ERROR
from spark.progress import backlog
from tests.kafka_broker import PAD_SERVICE, fresh_topics, pad_partitions
from tests.spark_fixtures import (
    INVALID_LINES,
    ROOT,
    SERVICES,
    expected_metrics,
    job_env,
    make_events,
    publish,
    rank_error,
    run_job,
)
from tests.test_layers import assert_layers_of_job
from tests.trace_fixtures import assert_index_equals

DATA_TABLES = (
    "service_metrics",
    "endpoint_metrics",
    "trace_samples",
    "service_dependencies",
    "dead_letter",
    "trace_index",
)

READER = """
import os, sys, time
from observability.store import Store
store = Store(sys.argv[1], max_wait_seconds=120)
ok = errors = 0
deadline = time.time() + float(sys.argv[3])
while not os.path.exists(sys.argv[2]) and time.time() < deadline:
    try:
        store.fetch_all("SELECT count(*), coalesce(sum(request_count), 0) FROM service_metrics")
        store.fetch_all("SELECT max(batch_id), max(watermark) FROM stream_progress")
        ok += 1
    except Exception as exc:
        errors += 1
        print("ERROR", repr(exc), flush=True)
    time.sleep(0.02)
print("reads", ok, "errors", errors, flush=True)
"""


def _minute(ms: int) -> int:
    return ms // 60_000 * 60_000


def _snapshot(store) -> dict:
    return {
        t: store.fetch_df(f"SELECT * EXCLUDE (updated_at) FROM {t}" if t.endswith("metrics") else f"SELECT * FROM {t}")
        .sort_values(by=list(store.fetch_df(f"SELECT * FROM {t} LIMIT 0").columns[:3]))
        .reset_index(drop=True)
        for t in DATA_TABLES
    }


def _assert_metrics_match(store, events, by_endpoint: bool, exclude_service: str | None = None) -> None:
    keys = ["window_start", "service"] + (["endpoint"] if by_endpoint else [])
    table = "endpoint_metrics" if by_endpoint else "service_metrics"
    got = store.fetch_df(f"SELECT * FROM {table}")
    if exclude_service:
        got = got[got.service != exclude_service]
    exp = expected_metrics(events, by_endpoint=by_endpoint)
    m = exp.merge(got, on=keys, how="outer", indicator=True, suffixes=("_exp", ""))
    assert (m["_merge"] == "both").all(), m[m["_merge"] != "both"][keys + ["_merge"]]
    for col in ("request_count", "error_count", "client_error_count", "max_latency_ms"):
        assert (m[f"{col}_exp"] == m[col]).all(), col
    assert np.allclose(m["avg_latency_ms_exp"], m["avg_latency_ms"], rtol=1e-9)
    assert np.allclose(m["error_count"] / m["request_count"], m["error_rate"])
    return m


def _assert_percentiles(store, events, sample_windows: int = 12) -> None:
    """Each percentile, merged across ranges and micro-batches, is exact while its window holds at
    most LATENCY_SKETCH_K latencies, and within a few times the sketch's rank error beyond."""
    df = pd.DataFrame(events)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None)
    got = store.fetch_df("SELECT * FROM service_metrics ORDER BY window_start, service LIMIT ?", [sample_windows])
    for _, row in got.iterrows():
        lat = df[(df.service == row.service) & (df.ts >= row.window_start) & (df.ts < row.window_end)].latency_ms
        for q, col in ((0.5, "p50_latency_ms"), (0.95, "p95_latency_ms"), (0.99, "p99_latency_ms")):
            bound = 0.0 if len(lat) <= LATENCY_SKETCH_K else 3.0 * PERCENTILE_RANK_ERROR + 1.0 / len(lat)
            assert rank_error(lat, row[col], q) <= bound, (row.service, col)


def test_available_now_backlog_late_data_and_replay(data_dir, settings, store, tmp_path):
    now_ms = _minute(int(time.time() * 1000))
    base = now_ms - 30 * 60_000
    events = make_events(15_000, base, 5 * 60_000, seed=5)
    publish(settings, events, [line for line, _ in INVALID_LINES])
    with create_producer(settings) as producer:  # producers' own rejects (e.g. replay)
        producer.send(
            settings.dead_letter_topic,
            make_dead_letter("replay:events.jsonl:3", "status_code: 700 outside 100-599", b'{"status_code":700}'),
        )
        producer.send(settings.dead_letter_topic, b"not a dead-letter record")
    env = job_env(data_dir)

    # a reader process queries the shared store the whole time the job writes
    stop_file = tmp_path / "stop-reader"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(settings.duckdb_path), str(stop_file), "300"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        proc = run_job(env, "--available-now")
    finally:
        stop_file.touch()
        reader_out = reader.communicate(timeout=60)[0]
    assert "errors 0" in reader_out and "ERROR" not in reader_out, reader_out
    assert int(reader_out.split("reads")[1].split()[0]) > 0
    assert f"spark: {len(events) + len(INVALID_LINES)} events" in proc.stdout
    # once both queries had read rows, Spark's idle planner processes were ended (spark.planners)
    assert "event='idle planners ended'" in proc.stderr, proc.stderr[-4000:]
    # the progress bar's backlog reads the committed offsets from the checkpoint: nothing is left
    assert committed_offsets(settings.checkpoint_dir / "metrics") == len(events) + len(INVALID_LINES)
    assert backlog(settings, settings.checkpoint_dir / "metrics") == 0

    # 1. aggregates equal a direct GROUP BY over the input, at both levels
    _assert_metrics_match(store, events, by_endpoint=False)
    _assert_metrics_match(store, events, by_endpoint=True)
    _assert_percentiles(store, events)
    assert_index_equals(store, events)  # one trace_index row per trace, as a GROUP BY over all spans

    # 2. every invalid line is a dead letter with a reason naming the field; producers' rejects too
    dead = store.fetch_df("SELECT * FROM dead_letter")
    raw_dead = dead[dead.source.str.startswith("spark:raw_events:")]
    assert len(raw_dead) == len(INVALID_LINES)
    for _, field in INVALID_LINES:
        assert raw_dead.reason.str.startswith(field).any(), field
    topic_dead = dead[~dead.source.str.startswith("spark:raw_events:")]
    assert set(topic_dead.source.str.split(":").str[0]) == {"replay", "spark"}
    assert "status_code: 700 outside 100-599" in set(topic_dead.reason)
    assert topic_dead.reason.str.startswith("dead_letter: unreadable record").sum() == 1

    # 3. progress, heartbeat, bronze, trace samples, edges, the aggregated topic
    progress = store.fetch_df("SELECT * FROM stream_progress ORDER BY batch_id")
    assert progress.rows_in.sum() == len(events) + len(INVALID_LINES)
    assert progress.rows_rejected.sum() == len(INVALID_LINES) and progress.rows_late.sum() == 0
    watermark = progress.watermark.max()
    assert watermark is not pd.NaT
    assert store.fetch_one("SELECT count(*) FROM heartbeats WHERE component = 'spark'")[0] == 1
    # no log or metric records: their queries never started (nor their source processes)
    assert not (settings.checkpoint_dir / "logs").exists() and not (settings.checkpoint_dir / "otel_metrics").exists()
    t_base = datetime.fromtimestamp(base / 1000, tz=UTC).replace(tzinfo=None)
    bronze = read_events(settings.bronze_dir, t_base - timedelta(hours=1), t_base + timedelta(hours=2))
    assert len(bronze) == len(events) and set(bronze.event_id) == {e["event_id"] for e in events}
    assert_layers_of_job(settings, store, events, t_base - timedelta(hours=1), t_base + timedelta(hours=2))
    reasons = set(store.fetch_df("SELECT reason FROM trace_samples").reason)
    assert reasons == {"error", "slow", "normal"}
    assert (
        store.fetch_one(
            "SELECT max(n) FROM (SELECT count(*) n FROM trace_samples WHERE reason = 'error' GROUP BY window_start, service)"
        )[0]
        <= 20
    )
    edges = store.fetch_df(
        "SELECT parent_service, child_service, sum(call_count) calls FROM service_dependencies GROUP BY ALL"
    )
    assert {("gateway", "checkout"), ("checkout", "payments"), ("search", "inventory")} <= set(
        zip(edges.parent_service, edges.child_service, strict=True)
    )
    with create_reader(settings) as r:
        ends = r.end_offsets(settings.aggregated_topic)
        published = [
            json.loads(rec.value) for p, end in ends.items() for rec in r.read(settings.aggregated_topic, p, 0, end)
        ]
    assert len(published) >= len(store.fetch_df("SELECT 1 FROM service_metrics"))
    assert {"id", "window_start", "service", "endpoint", "request_count", "p95_latency_ms"} <= set(published[0])
    assert sorted(p["id"] for p in published) == _outbox_ids(store, settings.aggregated_topic), (
        "every staged aggregate published once, under its stable id"
    )

    # 4. the final flush: the input has ended, so the last minute is final too, and the detector scores it
    last_window = _minute(max(int(pd.Timestamp(e["timestamp"]).timestamp() * 1000) for e in events))
    last_start = pd.Timestamp(last_window, unit="ms")
    assert watermark == last_start + pd.Timedelta(minutes=1), "the stream's watermark covers the last window"
    assert batch_watermark_ms(settings.checkpoint_dir / "metrics", int(progress.batch_id.max())) < last_window + 60_000
    assert len(store.fetch_df("SELECT 1 FROM service_metrics WHERE window_start = ?", [last_start])) > 0
    DetectionService(settings, store, bootstrap_models=False, publish=False).run_once()
    scored = store.fetch_df("SELECT service, last_window_start FROM detector_progress")
    assert set(scored.service) == set(SERVICES) and (scored.last_window_start == last_start).all(), scored

    # 5. late data: rows of a window still open in Spark's state refine it; rows of a closed window are counted late
    before = store.fetch_df("SELECT * FROM service_metrics WHERE service = 'gateway' ORDER BY window_start")
    refine = [
        {
            "timestamp": format_timestamp(last_window + 1000),
            "service": "gateway",
            "endpoint": "/late",
            "status_code": 500,
            "latency_ms": 1.0,
        }
        for _ in range(30)
    ]
    too_late = [
        {
            "timestamp": format_timestamp(base + 1000),
            "service": "gateway",
            "endpoint": "/late",
            "status_code": 200,
            "latency_ms": 1.0,
        }
        for _ in range(40)
    ]
    publish(settings, refine + too_late)
    run_job(env, "--available-now")
    after = store.fetch_df("SELECT * FROM service_metrics WHERE service = 'gateway' ORDER BY window_start")
    old_w = pd.Timestamp(last_window, unit="ms")
    b, a = before.set_index("window_start"), after.set_index("window_start")
    assert a.loc[old_w, "request_count"] == b.loc[old_w, "request_count"] + 30
    assert a.loc[old_w, "error_count"] == b.loc[old_w, "error_count"] + 30
    first_w = pd.Timestamp(_minute(base), unit="ms")
    assert a.loc[first_w, "request_count"] == b.loc[first_w, "request_count"]
    assert store.fetch_one("SELECT sum(rows_late) FROM stream_progress")[0] == 40
    assert (
        len(read_events(settings.bronze_dir, t_base - timedelta(hours=1), t_base + timedelta(hours=2)))
        == len(events) + 70
    )

    # 6. running again with nothing new changes nothing
    snap = _snapshot(store)
    bronze_files = sorted((p.name, p.stat().st_size) for p in settings.bronze_dir.rglob("*.parquet"))
    run_job(env, "--available-now")
    again = _snapshot(store)
    for t in DATA_TABLES:
        pd.testing.assert_frame_equal(snap[t], again[t], check_dtype=False, obj=t)
    assert sorted((p.name, p.stat().st_size) for p in settings.bronze_dir.rglob("*.parquet")) == bronze_files


def _outbox_ids(store, topic: str, sent: bool = True) -> list[str]:
    return sorted(
        r[0]
        for r in store.fetch_all("SELECT id FROM outbox WHERE topic = ? AND (sent_at IS NOT NULL) = ?", [topic, sent])
    )


def _published(settings, topic: str) -> list[dict]:
    with create_reader(settings) as r:
        return [json.loads(rec.value) for p, end in r.end_offsets(topic).items() for rec in r.read(topic, p, 0, end)]


def _killed_backlog_run(data_dir, settings, point: str, seed: int) -> tuple[int, list[dict], dict]:
    """Publish a 3,000-event backlog and run the job over it in 1,000-event batches until the
    fault point `point` kills it (SIGKILL); returns (the minute it ends at, the events, the env)."""
    now_ms = _minute(int(time.time() * 1000))
    events = make_events(3000, now_ms - 10 * 60_000, 3 * 60_000, seed=seed)
    events.sort(key=lambda e: e["timestamp"])
    publish(settings, events)
    env = job_env(data_dir, MAX_EVENTS_PER_BATCH=1000)
    killed = subprocess.run(
        [sys.executable, "-m", "spark.streaming_job", "--available-now"],
        cwd=ROOT,
        env=dict(env, FAULT_POINT=point),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    return now_ms, events, env


@pytest.mark.e2e
def test_kill_after_commit_then_restart_publishes_every_aggregate_once(data_dir, settings, store):
    """kill -9 right after a batch's DuckDB commit: its aggregates are in the outbox, and the restart sends them."""
    _, events, env = _killed_backlog_run(data_dir, settings, "spark.after_commit", seed=33)
    topic = settings.aggregated_topic
    assert store.fetch_one("SELECT count(*) FROM sink_commits WHERE sink LIKE 'metrics:%'")[0] == 1
    staged = _outbox_ids(store, topic, sent=False)
    assert staged and _published(settings, topic) == [], "committed with the batch, not yet published"

    run_job(env, "--available-now")
    published = _published(settings, topic)
    ids = sorted(p["id"] for p in published)
    assert set(staged) <= set(ids), "what the killed run committed is published by the restart"
    assert ids == _outbox_ids(store, topic) and len(ids) == len(set(ids)), "each record once"
    assert _outbox_ids(store, topic, sent=False) == []
    # the newest record per window carries the committed aggregate
    latest = {}
    for p in published:
        k = (p["window_start"], p["service"], p["endpoint"])
        if p["batch_id"] >= latest.get(k, {"batch_id": -1})["batch_id"]:
            latest[k] = p
    m = store.fetch_df(
        "SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%SZ') AS ws, service, request_count FROM service_metrics"
    )
    assert {(r.ws, r.service): r.request_count for r in m.itertuples()} == {
        (k[0], k[1]): v["request_count"] for k, v in latest.items() if k[2] is None
    }
    _assert_metrics_match(store, events, by_endpoint=False)


@pytest.mark.e2e
def test_kill_before_the_layers_commit_then_restart_writes_each_error_message_once(data_dir, settings, store):
    """kill -9 in the layer queue's thread after a batch's silver and gold files are written,
    before its error_messages commit (spark.layer_queue): the restart writes the batch's layers
    again and every error text is counted once."""
    now_ms, events, env = _killed_backlog_run(data_dir, settings, "spark.layers.before_commit", seed=34)
    assert store.fetch_one("SELECT count(*) FROM sink_commits WHERE sink LIKE 'metrics:%'")[0] >= 1
    assert store.fetch_one("SELECT count(*) FROM layer_queue")[0] >= 1, "the committed batch's layers are queued"
    assert store.fetch_one("SELECT count(*) FROM error_messages")[0] == 0
    assert list(settings.silver_dir.rglob("*.parquet")), "the killed batch's files were written"

    run_job(env, "--available-now")
    assert store.fetch_one("SELECT count(*) FROM layer_queue")[0] == 0
    t0 = datetime.fromtimestamp(now_ms / 1000, tz=UTC).replace(tzinfo=None)
    assert_layers_of_job(settings, store, events, t0 - timedelta(hours=1), t0 + timedelta(hours=1))


def _group_alive(pgid: int, wait_s: float = 15) -> list[str]:
    """Live (non-zombie) processes of a process group, after waiting a little for them to go."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for p in psutil.process_iter(["pid", "status", "cmdline"]):
            try:
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(p.info["cmdline"] or [])[:120])
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _wait_for_batch_in_flight(settings, store, proc, timeout_s: float = 120) -> int:
    """Poll until Spark has planned a micro-batch (its offsets file is written) that the sink has
    not committed; returns its id."""
    offsets = settings.checkpoint_dir / "metrics" / "offsets"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        planned = max((int(p.name) for p in offsets.iterdir() if p.name.isdigit()), default=-1)
        done = store.fetch_one("SELECT coalesce(max(batch_id), -1) FROM stream_progress")[0]
        if planned > done:
            return planned
        time.sleep(0.02)
    raise AssertionError("no micro-batch was in flight before the job ended")


@pytest.mark.e2e
def test_exactly_once_after_sigkill_mid_backlog(data_dir, settings, store):
    now_ms = _minute(int(time.time() * 1000))
    events = make_events(300_000, now_ms - 20 * 60_000, 10 * 60_000, seed=9)
    events.sort(key=lambda e: e["timestamp"])  # a backlog arrives roughly in time order: nothing is late
    publish(settings, events)
    env = job_env(data_dir, MAX_EVENTS_PER_BATCH=40_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark.streaming_job", "--available-now"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            committed = store.fetch_one("SELECT coalesce(sum(rows_in), 0) FROM stream_progress")[0]
            if committed >= 80_000:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished before it could be killed"
        assert 0 < committed < len(events)
        in_flight = _wait_for_batch_in_flight(settings, store, proc)  # planned, not yet committed
        os.killpg(proc.pid, signal.SIGKILL)  # driver, JVM and Python workers: the whole tree
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _group_alive(proc.pid) == []
    # the kill landed inside that batch: it never reached the store
    assert store.fetch_one("SELECT count(*) FROM stream_progress WHERE batch_id = ?", [in_flight]) == (0,)
    partial = store.fetch_one("SELECT coalesce(sum(rows_in), 0) FROM stream_progress")[0]
    assert partial < len(events)

    run_job(env, "--available-now", timeout=500)
    _assert_metrics_match(store, events, by_endpoint=False)
    _assert_metrics_match(store, events, by_endpoint=True)
    _assert_percentiles(store, events, sample_windows=20)
    assert store.fetch_one("SELECT sum(rows_in), sum(rows_late) FROM stream_progress") == (len(events), 0)
    t0 = datetime.fromtimestamp(now_ms / 1000, tz=UTC).replace(tzinfo=None)
    bronze = read_events(settings.bronze_dir, t0 - timedelta(hours=1), t0 + timedelta(hours=1))
    assert len(bronze) == len(events) and bronze.event_id.is_unique
    # no dead letter was published: the dead-letter query never started (issue 17: an idle one
    # kept a Python source process), so it has no checkpoint
    assert (settings.checkpoint_dir / "metrics").is_dir()
    assert not (settings.checkpoint_dir / "dead_letters").exists()


@pytest.mark.e2e
@pytest.mark.kafka
def test_job_over_kafka_transport(kafka_broker, data_dir, store):
    from observability.settings import Settings

    topics = fresh_topics(("RAW_EVENTS", "AGGREGATED", "ANOMALIES", "DEAD_LETTER"))
    env = job_env(data_dir, TRANSPORT="kafka", KAFKA_BROKER=kafka_broker, TOPIC_PARTITIONS=3, **topics)
    settings = Settings(
        DATA_DIR=str(data_dir), TRANSPORT="kafka", KAFKA_BROKER=kafka_broker, TOPIC_PARTITIONS=3, **topics
    )
    now_ms = _minute(int(time.time() * 1000))
    events = make_events(3000, now_ms - 10 * 60_000, 3 * 60_000, seed=21)
    publish(settings, events, [line for line, _ in INVALID_LINES[:3]])
    pad_partitions(settings, settings.raw_events_topic, 3, now_ms - 10 * 60_000)  # Tansu hides the last batch
    run_job(env, "--available-now", timeout=400)
    _assert_metrics_match(store, events, by_endpoint=False, exclude_service=PAD_SERVICE)
    assert store.fetch_one("SELECT count(*) FROM dead_letter WHERE source LIKE 'spark:raw_events_%'")[0] == 3
