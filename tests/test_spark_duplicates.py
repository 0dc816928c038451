"""A batch the producer wrote twice (its acknowledgement was lost) is counted once (issue 12).

The Spark source drops events whose event_id already occurred in the same
partition within DEDUP_HORIZON_EVENTS offsets (`spark.dedupe`); these tests
put real duplicates into the real log / broker and compare the job's
per-window counts with a GROUP BY over the events, each counted once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from kafka.errors import KafkaTimeoutError

from observability.bronze import read_events
from observability.schema import format_timestamp
from observability.transport.kafka import KafkaProducerTransport
from tests.kafka_broker import consume, fresh_topics
from tests.spark_fixtures import job_env, make_events, publish, run_job
from tests.test_spark_job import _assert_metrics_match, _minute


def expected_edges(events: list[dict]) -> Counter:
    """(window_start, parent_service, child_service) -> calls, over the events counted once."""
    service_of = {(e["trace_id"], e["span_id"]): e["service"] for e in events}
    edges = Counter()
    for e in events:
        parent = service_of.get((e["trace_id"], e.get("parent_span_id")))
        if parent and parent != e["service"]:
            ts = datetime.strptime(e["timestamp"][:16], "%Y-%m-%dT%H:%M")
            edges[(ts, parent, e["service"])] += 1
    return edges


def assert_counted_once(store, settings, events: list[dict], extra_rows: int = 0, exclude_service: str | None = None):
    _assert_metrics_match(store, events, by_endpoint=False, exclude_service=exclude_service)
    _assert_metrics_match(store, events, by_endpoint=True, exclude_service=exclude_service)
    assert store.fetch_one("SELECT sum(rows_in) FROM stream_progress")[0] == len(events) + extra_rows
    got = Counter(
        {
            (w, p, c): n
            for w, p, c, n in store.fetch_all(
                "SELECT window_start, parent_service, child_service, call_count FROM service_dependencies"
            )
        }
    )
    # Not equality: a call whose parent span fell in the previous micro-batch is not joined (known,
    # also without duplicates); but no call is counted twice.
    expected = expected_edges(events)
    assert set(got) <= set(expected) and all(n <= expected[k] for k, n in got.items()), "no edge counted twice"
    assert sum(got.values()) >= 0.99 * sum(expected.values())
    t0 = datetime.strptime(min(e["timestamp"] for e in events)[:13], "%Y-%m-%dT%H")
    bronze = read_events(settings.bronze_dir, t0 - timedelta(hours=1), t0 + timedelta(hours=3))
    assert bronze.event_id.is_unique and len(bronze) == len(events) + extra_rows


@pytest.mark.e2e
def test_a_batch_written_twice_to_the_local_log_is_counted_once(data_dir, settings, store):
    now_ms = _minute(int(time.time() * 1000))
    events = make_events(6000, now_ms - 10 * 60_000, 3 * 60_000, seed=41)
    events.sort(key=lambda e: e["timestamp"])
    # the producer wrote events 1500-2999, did not see that it had, and wrote them again
    publish(settings, events[:3000] + events[1500:3000] + events[3000:])
    run_job(job_env(data_dir, MAX_EVENTS_PER_BATCH=2000), "--available-now")  # the copies fall in later micro-batches
    assert store.fetch_one("SELECT count(*) FROM stream_progress")[0] >= 3
    assert_counted_once(store, settings, events)


class AckLost(KafkaProducerTransport):
    """The project's Kafka producer; the broker's answer to its first `lose` produce requests is thrown
    away after the broker wrote them (a fault injected into the real client, as a dropped connection
    or a timeout would): the producer retries batches the broker already holds."""

    def __init__(self, bootstrap: str, lose: int = 1, **kwargs) -> None:
        super().__init__(bootstrap, **kwargs)
        self.lose, self.lost = lose, 0
        real = self._client.send_and_receive

        def send_and_receive(node, request, **kw):
            from kafka.protocol.producer import ProduceRequest

            response = real(node, request, **kw)
            if self.lose and isinstance(request, ProduceRequest):
                self.lose -= 1
                self.lost += 1
                raise KafkaTimeoutError("acknowledgement lost (injected)")
            return response

        self._client.send_and_receive = send_and_receive


@pytest.mark.e2e
@pytest.mark.kafka
def test_a_lost_acknowledgement_over_kafka_is_counted_once(kafka_broker, data_dir, store):
    from observability.settings import Settings
    from observability.transport import create_topics, partition_for

    topics = fresh_topics(("RAW_EVENTS", "AGGREGATED", "ANOMALIES", "DEAD_LETTER"))
    settings = Settings(
        DATA_DIR=str(data_dir), TRANSPORT="kafka", KAFKA_BROKER=kafka_broker, TOPIC_PARTITIONS=3, **topics
    )
    create_topics(settings)
    now_ms = _minute(int(time.time() * 1000))
    events = make_events(4000, now_ms - 10 * 60_000, 3 * 60_000, seed=43)
    events.sort(key=lambda e: e["timestamp"])
    topic = settings.raw_events_topic

    def send(producer, evs):
        for e in evs:
            producer.send(topic, json.dumps(e, separators=(",", ":")).encode(), key=e["trace_id"].encode())
        producer.flush()

    producer = AckLost(kafka_broker, lose=1, linger_ms=600_000)  # only flush() ships: one request per send()
    send(producer, events[:1500])  # its acknowledgement is lost: retried, so written twice
    send(producer, events[1500:])
    # Tansu reports a partition's end before its last batch: pad each partition with one more
    pad_keys, i = {}, 0
    while len(pad_keys) < 3:
        pad_keys.setdefault(partition_for(f"pad{i}".encode(), 3), f"pad{i}".encode())
        i += 1
    for key in pad_keys.values():
        pad = {
            "timestamp": format_timestamp(now_ms - 10 * 60_000),
            "service": "zz-padding",
            "status_code": 200,
            "latency_ms": 1.0,
        }
        producer.send(topic, json.dumps(pad).encode(), key=key)
    producer.close()
    assert producer.lost == 1
    on_broker = consume(kafka_broker, topic, len(events) + 1500 + 3)
    assert len(on_broker) == len(events) + 1500 + 3, "the retried batch is on the broker twice"

    env = job_env(
        data_dir, TRANSPORT="kafka", KAFKA_BROKER=kafka_broker, TOPIC_PARTITIONS=3, MAX_EVENTS_PER_BATCH=1500, **topics
    )
    run_job(env, "--available-now", timeout=400)
    assert_counted_once(store, settings, events, extra_rows=3, exclude_service="zz-padding")
