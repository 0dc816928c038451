"""End to end: `python -m anomaly_detection.detector --once` on a seeded DuckDB file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import duckdb

from observability import tables
from observability.transport import create_reader
from tests.detection_fixtures import START, seed_cascade, set_watermark
from tests.prometheus_scrape import free_port, scrape, value

ROOT = Path(__file__).resolve().parents[1]


def run_once(data_dir: Path) -> str:
    env = dict(os.environ, DATA_DIR=str(data_dir), TRANSPORT="local")
    env.pop("DUCKDB_PATH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly_detection.detector", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def topic_count(settings) -> int:
    with create_reader(settings) as r:
        return sum(r.end_offsets(settings.anomalies_topic).values())


def test_once_scores_final_windows_groups_incidents_and_is_idempotent(store, settings, data_dir):
    seed_cascade(store, minutes=240, fault=(200, 210), watermark_minute=208)
    out = run_once(data_dir)
    assert "detector summary:" in out

    # Only windows the watermark passed are scored (window_end <= watermark).
    progress = dict(store.fetch_all(f"SELECT service, last_window_start FROM {tables.DETECTOR_PROGRESS}"))
    assert set(progress) == {"checkout", "payments", "search", "inventory", "database"}
    assert all(v == START + timedelta(minutes=207) for v in progress.values())

    anomalies = store.fetch_df(f"SELECT * FROM {tables.ANOMALIES} ORDER BY window_start, service")
    assert set(anomalies.service) == {"database", "inventory", "checkout"}, "payments and search stayed normal"
    assert anomalies.window_start.min() == START + timedelta(minutes=200)
    assert (anomalies.window_end <= START + timedelta(minutes=208)).all()
    assert set(anomalies.anomaly_type) <= {"error_surge", "latency_spike"}
    assert set(anomalies.severity) <= {"low", "medium", "high", "critical"}
    assert ((anomalies.score >= 0.5) & (anomalies.score <= 1)).all()
    first = anomalies[
        (anomalies.service == "database") & (anomalies.window_start == START + timedelta(minutes=200))
    ].iloc[0]
    assert list(first.sample_trace_ids[:2]) == ["e" * 32, "f" * 32], "error traces come first"
    assert set(json.loads(first.detectors)) >= {"rules", "robust_stats"}
    assert json.loads(first.observed)["error_rate"] > 5 * json.loads(first.baseline)["error_rate"]

    # One correlated incident for the fault, shown at the entry service users see, every anomaly linked to it.
    incidents = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} ORDER BY service")
    assert list(incidents.service) == ["checkout"]
    assert (incidents.status == "open").all() and incidents.ended_at.isna().all()
    assert (incidents.root_cause_service == "database").all(), "the deepest callee that went wrong first"
    assert sorted(incidents.related_services[0]) == ["database", "inventory"]
    assert set(anomalies.incident_id) == {incidents.id[0]}
    assert topic_count(settings) == len(anomalies), "every anomaly is published to the anomalies topic"

    # Re-run with nothing new: nothing changes.
    before_updated = dict(store.fetch_all(f"SELECT id, updated_at FROM {tables.INCIDENTS}"))
    run_once(data_dir)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.ANOMALIES}")[0] == len(anomalies)
    assert dict(store.fetch_all(f"SELECT id, updated_at FROM {tables.INCIDENTS}")) == before_updated
    assert topic_count(settings) == len(anomalies)

    # The watermark moves past the fault and the quiet windows: incidents resolve, updated_at moves.
    set_watermark(store, 240, batch_id=2)
    run_once(data_dir)
    incidents = store.fetch_df(f"SELECT * FROM {tables.INCIDENTS} ORDER BY service")
    assert len(incidents) == 1 and (incidents.status == "resolved").all()
    assert (incidents.ended_at == START + timedelta(minutes=211)).all()
    assert all(incidents.set_index("id").updated_at[k] > v for k, v in before_updated.items())
    n = store.fetch_one(f"SELECT count(*) FROM {tables.ANOMALIES}")[0]
    assert n == store.fetch_one(f"SELECT count(DISTINCT (service, window_start)) FROM {tables.ANOMALIES}")[0]
    assert store.fetch_one(f"SELECT count(*) FROM {tables.HEARTBEATS} WHERE component = 'detector'")[0] == 1


def test_without_watermark_nothing_is_final(store, data_dir):
    from tests.seeding import seed_metrics

    seed_metrics(store, start=START, minutes=30)
    assert "windows=0" in run_once(data_dir)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.DETECTOR_PROGRESS}")[0] == 0


class Lines:
    """A subprocess's output lines, collected by a thread, to wait on what it has logged."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self._thread.start()

    def matching(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]

    def wait_for(self, text: str, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(text)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{count} x {text!r} not logged within {timeout}s; output:\n" + "".join(self.lines[-40:]))


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # the detector may hold the file for a moment
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def hold(path: Path, timeout: float = 60) -> duckdb.DuckDBPyConnection:
    """A read-write connection that locks every other process out (retried while another holds the file)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def field(line: str, name: str) -> float:
    return float(re.search(rf"\b{name}=([0-9.]+)", line).group(1))


def test_continuous_mode_backs_off_while_the_database_stays_locked_then_recovers(store, settings, data_dir):
    seed_cascade(store, minutes=60, fault=(40, 45), watermark_minute=60)
    interval = 0.2
    metrics_port = free_port()
    env = dict(
        os.environ,
        DATA_DIR=str(data_dir),
        TRANSPORT="local",
        DETECT_INTERVAL_SECONDS=str(interval),
        DETECT_LOCK_WAIT_SECONDS="0.3",
        PYTHONUNBUFFERED="1",
        METRICS_PORT_DETECTOR=str(metrics_port),
    )
    env.pop("DUCKDB_PATH", None)
    lock = duckdb.connect(str(settings.duckdb_path))  # holds the file: every other process is locked out
    proc = subprocess.Popen(
        [sys.executable, "-m", "anomaly_detection.detector", "--no-publish"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Lines(proc.stdout)
    try:
        failed = out.wait_for("cycle failed, backing off", count=3, timeout=60)
        assert proc.poll() is None, "the detector must not die while the DB is locked"
        assert [field(line, "failures") for line in failed[:3]] == [1, 2, 3]
        assert [field(line, "wait_seconds") for line in failed[:3]] == [interval * 2, interval * 4, interval * 8], (
            "exponential backoff"
        )
        assert "StoreBusy" in "".join(failed) or "stayed locked" in "".join(failed)
        assert not out.matching("cycle done"), "no cycle can finish while the file is held"
        lock.close()
        wait_until(
            lambda: store.fetch_one(f"SELECT count(*) FROM {tables.DETECTOR_PROGRESS}")[0] == 5,
            120,
            "every service scored",
        )
        out.wait_for("cycle done", count=1, timeout=60)
        assert store.fetch_one(f"SELECT count(*) FROM {tables.INCIDENTS}")[0] >= 1
        # its /metrics, read by Prometheus' parser: the failed cycles, the passes timed, the windows scored
        samples = scrape(metrics_port)
        assert value(samples, "observability_cycle_failures_total", stage="detector") >= 3
        assert value(samples, "observability_batch_duration_seconds_count", stage="detector") >= 4
        scored = value(samples, "observability_events_in_total", stage="detector", kind="window")
        assert scored == store.fetch_one(f"SELECT count(*) FROM {tables.SERVICE_METRICS}")[0]
        assert value(samples, "observability_lag_seconds", stage="detector") > 0
        # After a success the backoff starts over: the next failure is the first again.
        before = len(out.matching("cycle failed, backing off"))  # every line up to "cycle done" is read by now
        lock = hold(settings.duckdb_path)
        again = out.wait_for("cycle failed, backing off", count=before + 1, timeout=60)[before:]
        assert field(again[0], "failures") == 1
        lock.close()
    finally:
        lock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(out.lines[-40:])


def published_anomaly_ids(settings) -> list[str]:
    """The stable id of every record on the anomalies topic (duplicates kept)."""
    with create_reader(settings) as r:
        topic = settings.anomalies_topic
        return [
            json.loads(rec.value)["id"] for p, end in r.end_offsets(topic).items() for rec in r.read(topic, p, 0, end)
        ]


def test_kill_between_commit_and_publish_then_restart_publishes_every_anomaly_once(store, settings, data_dir):
    """Regression (issue 12): kill -9 after the anomaly rows commit, before they are published.

    FAULT_POINT makes the detector SIGKILL itself at exactly that point; the
    restart must publish what the killed run committed, each anomaly once.
    """
    seed_cascade(store, minutes=240, fault=(200, 210), watermark_minute=240)
    env = dict(os.environ, DATA_DIR=str(data_dir), TRANSPORT="local", FAULT_POINT="detector.after_commit")
    env.pop("DUCKDB_PATH", None)
    killed = subprocess.run(
        [sys.executable, "-m", "anomaly_detection.detector", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    committed = sorted(r[0] for r in store.fetch_all(f"SELECT id FROM {tables.ANOMALIES}"))
    assert committed, "the kill came after anomaly rows were committed"
    assert published_anomaly_ids(settings) == [], "and before any was published"

    run_once(data_dir)  # the restart: nothing is left to score, the unsent anomalies are sent
    assert sorted(published_anomaly_ids(settings)) == committed, "every committed anomaly on the topic exactly once"
    run_once(data_dir)
    assert sorted(published_anomaly_ids(settings)) == committed, "a further run sends nothing again"
