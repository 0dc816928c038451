"""The `kafka` transport: kafka-python producer, admin and offset-range reader.

The producer uses acks=all with retries and batching and is keyed by trace id
upstream, so a trace stays in one partition. The reader assigns partitions
explicitly (no consumer group): offsets are owned by the caller, e.g. Spark's
checkpoint, as in Spark's own Kafka source.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from observability.logs import get_logger
from observability.transport.base import Producer, Record, TopicReader

log = get_logger(__name__)


def create_topics(bootstrap: str, topics: list[str], partitions: int, replication: int = 1, timeout_s: float = 30) -> list[str]:
    """Create missing topics; returns the names created now."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="obs-admin", request_timeout_ms=10000)
            break
        except Exception as exc:  # broker still starting
            if time.monotonic() > deadline:
                raise
            log.info("kafka admin: waiting for broker", error=str(exc))
            time.sleep(1)
    created = []
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        for t in missing:
            try:
                admin.create_topics([NewTopic(name=t, num_partitions=partitions, replication_factor=replication)])
                created.append(t)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created


class KafkaProducerTransport(Producer):
    def __init__(self, bootstrap: str, *, linger_ms: int = 20, batch_size: int = 256 * 1024, **config) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            retries=10,
            linger_ms=linger_ms,
            batch_size=batch_size,
            max_in_flight_requests_per_connection=1,  # keep per-partition order across retries
            **config,
        )
        # Records whose delivery failed after the client's own retries; re-sent on flush()
        # so an outage longer than the retry budget does not silently drop them.
        self._failed: list[tuple[str, bytes, bytes | None, int | None, Exception]] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None) -> None:
        future = self._producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms)
        future.add_errback(lambda exc: self._failed.append((topic, value, key, timestamp_ms, exc)))

    def flush(self) -> None:
        """Returns once everything sent is acked; raises (keeping the records) if some cannot be."""
        self._producer.flush()
        for _ in range(3):
            if not self._failed:
                return
            failed, self._failed = self._failed, []
            log.warning("kafka: re-sending records that failed delivery", count=len(failed), error=str(failed[0][4]))
            for topic, value, key, ts, _exc in failed:
                self.send(topic, value, key, ts)
            self._producer.flush()
        if self._failed:
            raise RuntimeError(f"kafka: {len(self._failed)} records not delivered: {self._failed[0][4]}")

    def close(self) -> None:
        self.flush()
        self._producer.close()


class KafkaTopicReader(TopicReader):
    def __init__(self, bootstrap: str, *, poll_timeout_ms: int = 1000, idle_polls: int = 10, **config) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            **config,
        )
        self.poll_timeout_ms = poll_timeout_ms
        self.idle_polls = idle_polls

    def partitions(self, topic: str) -> list[int]:
        parts = self._consumer.partitions_for_topic(topic)
        return sorted(parts) if parts else []

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka import TopicPartition

        tps = [TopicPartition(topic, p) for p in self.partitions(topic)]
        if not tps:
            return {}
        return {tp.partition: off for tp, off in self._consumer.end_offsets(tps).items()}

    def read(self, topic: str, partition: int, start: int, end: int) -> Iterator[Record]:
        from kafka import TopicPartition

        if end <= start:
            return
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        nxt, idle = start, 0
        while nxt < end:
            batch = self._consumer.poll(timeout_ms=self.poll_timeout_ms).get(tp, [])
            if not batch:
                idle += 1
                if idle >= self.idle_polls:
                    raise TimeoutError(f"kafka: {topic}[{partition}] stalled at offset {nxt} before {end}")
                continue
            idle = 0
            for m in batch:
                if m.offset < nxt:
                    continue
                if m.offset >= end:
                    return
                yield Record(topic, partition, m.offset, m.timestamp, m.key, m.value)
                nxt = m.offset + 1

    def close(self) -> None:
        self._consumer.close()
