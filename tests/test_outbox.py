"""The transactional outbox (observability.outbox) on a real DuckDB file and the real local log."""

from __future__ import annotations

import errno
import json
from datetime import datetime, timedelta

import pytest

from observability import outbox, quality, tables
from observability.transport.base import Producer
from observability.transport.local_log import LocalLogProducer
from tests.transport_fixtures import read_topic

TOPIC = "anomalies"


class FlushFails(Producer):
    """The real local-log producer, whose next `fail` flushes raise ENOSPC before anything is written.

    A stand-in for a full disk or a broker that does not acknowledge: the
    records handed over stay in the inner producer's memory and are lost with it.
    """

    def __init__(self, inner: LocalLogProducer, fail: int) -> None:
        self.inner, self.fail, self.sent = inner, fail, 0

    def send(self, topic, value, key=None):
        self.inner.send(topic, value, key)
        self.sent += 1

    def flush(self):
        if self.fail:
            self.fail -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.flush()

    def close(self):
        self.inner.close()


def local_producer(settings) -> LocalLogProducer:
    # linger long enough that nothing is written before flush(): what a failed flush held is lost
    return LocalLogProducer(settings.log_dir, partitions=settings.topic_partitions, linger_ms=600_000)


def stage_records(store, ids, topic=TOPIC, fail: bool = False):
    def work(con):
        con.execute(
            f"INSERT INTO {tables.SCENARIO_LABELS} VALUES (?, 'error_surge', 's', 's', now(), now(), now())",
            [f"data-{ids[0]}"],
        )
        outbox.stage(con, topic, [(i, f"key-{i}", {"n": n}) for n, i in enumerate(ids)])
        if fail:
            raise RuntimeError("the data's transaction fails")

    store.write(work)


def ids_on(settings, topic=TOPIC) -> list[str]:
    return [json.loads(r.value)["id"] for r in read_topic(settings, topic, 0)]


def test_staged_records_commit_or_roll_back_with_the_data(store):
    with pytest.raises(RuntimeError):
        stage_records(store, ["a", "b"], fail=True)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.OUTBOX}")[0] == 0
    assert store.fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}")[0] == 0
    stage_records(store, ["a", "b"])
    rows = store.fetch_all(f"SELECT id, seq, topic, key, value, sent_at FROM {tables.OUTBOX} ORDER BY seq")
    assert [(r[0], r[2], r[3], r[5]) for r in rows] == [("a", TOPIC, "key-a", None), ("b", TOPIC, "key-b", None)]
    assert json.loads(rows[0][4]) == {"id": "a", "n": 0}, "the value carries the stable id first"
    stage_records(store, ["c"])
    assert store.fetch_one(f"SELECT seq FROM {tables.OUTBOX} WHERE id = 'c'")[0] > rows[1][1]


def test_publisher_resends_unsent_after_a_transport_failure_and_never_resends_sent(store, settings):
    stage_records(store, [f"r{i}" for i in range(25)])
    producers = []

    def connect():
        producers.append(FlushFails(local_producer(settings), fail=1 if not producers else 0))
        return producers[-1]

    publisher = outbox.OutboxPublisher(store, [TOPIC], connect, chunk_rows=10)
    with pytest.raises(OSError):
        publisher.publish_pending()
    assert ids_on(settings) == [], "nothing was flushed"
    assert outbox.unsent_count(store) == 25, "so nothing is marked sent"
    assert publisher.try_publish() == 25, "the next attempt, on a fresh producer, sends them all"
    assert len(producers) == 2 and producers[1].sent == 25
    assert sorted(ids_on(settings)) == sorted(f"r{i}" for i in range(25))
    assert outbox.unsent_count(store) == 0

    stage_records(store, ["late"])
    assert publisher.publish_pending() == 1, "sent rows are not resent"
    assert sorted(ids_on(settings)) == sorted([f"r{i}" for i in range(25)] + ["late"])
    assert publisher.publish_pending() == 0
    publisher.close()
    # sent in staging order (one partition per key, so compare within each partition's log)
    with_seq = dict(store.fetch_all(f"SELECT id, seq FROM {tables.OUTBOX}"))
    for p_records in _by_partition(read_topic(settings, TOPIC, 0)).values():
        seqs = [with_seq[json.loads(r.value)["id"]] for r in p_records]
        assert seqs == sorted(seqs)


def _by_partition(records):
    out = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


def test_a_crash_after_flush_before_the_mark_resends_with_the_same_ids(store, settings):
    """At least once: the duplicate carries the same id, which consumers de-duplicate on."""
    stage_records(store, ["x", "y"])

    class CrashBeforeMark(outbox.OutboxPublisher):
        def _mark_sent(self, ids):
            raise KeyboardInterrupt("killed after flush")

    with pytest.raises(KeyboardInterrupt):
        CrashBeforeMark(store, [TOPIC], lambda: local_producer(settings)).publish_pending()
    assert outbox.OutboxPublisher(store, [TOPIC], lambda: local_producer(settings)).publish_pending() == 2
    assert sorted(ids_on(settings)) == ["x", "x", "y", "y"]
    assert outbox.unsent_count(store) == 0


def test_each_publisher_sends_only_its_own_topics(store, settings):
    stage_records(store, ["an"], topic=TOPIC)
    stage_records(store, ["ag"], topic="aggregated_metrics")
    assert outbox.OutboxPublisher(store, [TOPIC], lambda: local_producer(settings)).publish_pending() == 1
    assert ids_on(settings) == ["an"] and ids_on(settings, "aggregated_metrics") == []
    assert outbox.unsent_count(store, ["aggregated_metrics"]) == 1


def test_retention_prunes_sent_rows_and_keeps_unsent_ones_however_old(store, settings):
    now = datetime(2026, 6, 10, 12, 30)
    cutoff = quality.retention_cutoff(settings, now)
    old, new = cutoff - timedelta(minutes=1), cutoff + timedelta(minutes=1)
    store.executemany(
        f"INSERT INTO {tables.OUTBOX} (id, seq, topic, key, value, created_at, sent_at) VALUES (?, ?, 't', NULL, '{{}}', ?, ?)",
        [["sent-old", 1, old, old], ["sent-new", 2, old, new], ["unsent-old", 3, old - timedelta(days=30), None]],
    )
    deleted = quality.apply_retention(settings, store, now)
    assert deleted[tables.OUTBOX] == 1
    assert {r[0] for r in store.fetch_all(f"SELECT id FROM {tables.OUTBOX}")} == {"sent-new", "unsent-old"}


@pytest.mark.kafka
def test_publisher_over_kafka_keeps_rows_while_the_broker_is_away(store, tmp_path, kafka_broker):
    import socket
    import uuid

    from observability.transport.kafka import KafkaProducerTransport, create_topics
    from tests.kafka_broker import consume

    topic = f"anomalies_{uuid.uuid4().hex[:8]}"
    create_topics(kafka_broker, [topic], 2)
    with socket.socket() as s:  # a port where no broker listens
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    stage_records(store, [f"k{i}" for i in range(30)], topic=topic)
    target = {"bootstrap": nowhere}
    publisher = outbox.OutboxPublisher(
        store,
        [topic],
        lambda: KafkaProducerTransport(target["bootstrap"], request_timeout_ms=2000, delivery_timeout_s=2),
    )
    assert publisher.try_publish() == 0
    assert outbox.unsent_count(store, [topic]) == 30
    target["bootstrap"] = kafka_broker  # the broker is back
    assert publisher.try_publish() == 30
    publisher.close()
    got = consume(kafka_broker, topic, 30, timeout_s=30)
    assert sorted(json.loads(r.value)["id"] for r in got) == sorted(f"k{i}" for i in range(30))
    assert outbox.unsent_count(store, [topic]) == 0
