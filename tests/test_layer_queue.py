"""The layer queue (spark.layer_queue): committed batches' silver, gold and error_messages,
written by the driver's thread, once each, on real bronze Parquet and a real DuckDB file."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pandas as pd

from observability import bronze, health, layers, tables
from observability.store import utcnow
from spark import layer_queue
from spark.layer_queue import LayerQueue
from tests.test_layers import T0, failing_trace


def _batch(settings, trace: str) -> list[str]:
    """One micro-batch's bronze files: a failing trace (one error message)."""
    before = set(settings.bronze_dir.rglob("*.parquet"))
    bronze.write_events(settings.bronze_dir, pd.DataFrame(failing_trace(trace)))
    return sorted(str(f) for f in set(settings.bronze_dir.rglob("*.parquet")) - before)


def _queue(store, key: str, files: list[str], queued_at=None) -> None:
    store.write(lambda con: layer_queue.enqueue(con, key, files, queued_at or utcnow()))


def _error_count(store) -> int:
    return int(store.fetch_one(f"SELECT coalesce(sum(count), 0) FROM {tables.ERROR_MESSAGES}")[0])


def test_queued_batches_get_their_layers_once(settings, store):
    _queue(store, "metrics:q:0", _batch(settings, "1" * 32))
    _queue(store, "metrics:q:1", _batch(settings, "2" * 32))
    assert health.check_layer_queue(settings, store, utcnow()).status == "healthy"  # just queued: fresh
    q = LayerQueue(store, settings)
    q.start()
    try:
        assert q.wait_until(0) == 0
    finally:
        q.stop()
    assert q.written == 2 and _error_count(store) == 2
    assert store.fetch_one(f"SELECT count(*) FROM {tables.LAYER_QUEUE}")[0] == 0
    silver = layers.read_silver(settings.silver_dir, T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert len(silver) == 10 and silver["event_id"].is_unique
    assert "every committed batch" in health.check_layer_queue(settings, store, utcnow()).detail

    # a second run (e.g. after a restart) finds nothing queued: nothing is added twice
    again = LayerQueue(store, settings)
    again.start()
    again.wait_until(0)
    again.stop()
    assert again.written == 0 and _error_count(store) == 2


def test_a_written_batch_committed_by_another_is_not_added_again(settings, store):
    """The commit adds error_messages only while the batch's row is there (the check and the
    delete are in one transaction)."""
    files = _batch(settings, "3" * 32)
    _queue(store, "metrics:q:7", files)
    errors = layers.write_batch_layers(settings, files)
    assert store.write(lambda con: layer_queue._commit(con, "metrics:q:7", errors)) is True
    assert store.write(lambda con: layer_queue._commit(con, "metrics:q:7", errors)) is False
    assert _error_count(store) == 1


def test_a_failing_batch_is_retried_then_left_with_its_error_and_the_queue_moves_on(settings, store):
    bad, good = _batch(settings, "4" * 32), _batch(settings, "5" * 32)
    _queue(store, "metrics:q:0", bad, utcnow() - timedelta(seconds=2))
    _queue(store, "metrics:q:1", good)
    calls: list[str] = []

    def write(s, files):
        calls.append(files[0])
        if files == bad:
            raise OSError("disk on fire")
        return layers.write_batch_layers(s, files)

    q = LayerQueue(store, settings, write=write, max_attempts=layers.LAYER_MAX_ATTEMPTS, backoff_seconds=0.01)
    q.start()
    try:
        assert q.wait_until(0) == 0
    finally:
        q.stop()
    assert calls.count(bad[0]) == layers.LAYER_MAX_ATTEMPTS and calls.count(good[0]) == 1
    row = store.fetch_one(f"SELECT batch_key, attempts, last_error FROM {tables.LAYER_QUEUE}")
    assert row == ("metrics:q:0", layers.LAYER_MAX_ATTEMPTS, "OSError: disk on fire")
    assert _error_count(store) == 1  # the good batch's
    result = health.check_layer_queue(settings, store, utcnow())
    assert result.status == "unhealthy" and "disk on fire" in result.detail, result

    # the next start-up (the disk has room again) tries the batch given up on once more
    restarted = LayerQueue(store, settings)
    restarted.start()
    try:
        deadline = time.monotonic() + 30
        while store.fetch_one(f"SELECT count(*) FROM {tables.LAYER_QUEUE}")[0] and time.monotonic() < deadline:
            restarted.wait_until(0)  # given-up rows do not count as pending: poll the table
            time.sleep(0.05)
    finally:
        restarted.stop()
    assert restarted.written == 1 and _error_count(store) == 2
    assert health.check_layer_queue(settings, store, utcnow()).status == "healthy"


def test_health_grades_the_oldest_queued_batch(settings, store):
    max_age = settings.health_progress_max_age_seconds
    _queue(store, "metrics:q:0", _batch(settings, "6" * 32), utcnow() - timedelta(seconds=2 * max_age))
    result = health.check_layer_queue(settings, store, utcnow())
    assert result.status == "degraded" and "1 batches' layers to write" in result.detail, result
    store.execute(f"UPDATE {tables.LAYER_QUEUE} SET queued_at = ?", [utcnow() - timedelta(seconds=4 * max_age)])
    assert health.check_layer_queue(settings, store, utcnow()).status == "unhealthy"


def test_waiting_returns_when_the_job_stops(settings, store):
    """A stop signal must not hang the job behind a slow layer write."""
    _queue(store, "metrics:q:0", _batch(settings, "7" * 32))
    release, stop = threading.Event(), threading.Event()

    def slow_write(s, files):
        release.wait(30)
        return layers.write_batch_layers(s, files)

    q = LayerQueue(store, settings, write=slow_write)
    q.start()
    try:
        stop.set()
        assert q.wait_until(0, stop) == 1  # returned at once, the batch still queued
    finally:
        release.set()
        q.stop()
    assert store.fetch_one(f"SELECT count(*) FROM {tables.LAYER_QUEUE}")[0] == 0  # the one in progress finished


def test_a_batch_handed_over_and_also_in_the_table_is_written_once(settings, store):
    """The job hands each committed batch over in memory; at start-up the thread reads the table
    first (what a killed run left), and a batch found both ways is written once."""
    left, handed = _batch(settings, "8" * 32), _batch(settings, "9" * 32)
    _queue(store, "metrics:q:0", left)
    _queue(store, "metrics:q:1", handed)
    calls: list[str] = []

    def write(s, files):
        calls.append(files[0])
        return layers.write_batch_layers(s, files)

    q = LayerQueue(store, settings, write=write)
    q.notify("metrics:q:1", handed)  # before start: the table is read first, and holds it too
    q.start()
    try:
        assert q.wait_until(0) == 0
        _queue(store, "metrics:q:2", later := _batch(settings, "a" * 32))
        q.notify("metrics:q:2", later)  # from here on, taken in memory
        assert q.wait_until(0) == 0
    finally:
        q.stop()
    assert sorted(calls) == sorted([left[0], handed[0], later[0]]), "each batch written once"
    assert q.written == 3 and _error_count(store) == 3
