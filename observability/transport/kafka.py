"""The `kafka` transport: producer, admin and offset-range reader, all on kafka-python.

The producer (batched by us, see `KafkaProducerTransport`) uses acks=all with
retries and is keyed by trace id upstream, so a trace stays in one partition. The reader assigns partitions
explicitly (no consumer group): offsets are owned by the caller, e.g. Spark's
checkpoint, as in Spark's own Kafka source.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, NodeNotReadyError, for_code

from observability.logs import get_logger
from observability.transport.base import Producer, Record, TopicReader, partition_for

log = get_logger(__name__)


def create_topics(
    bootstrap: str, topics: list[str], partitions: int, replication: int = 1, timeout_s: float = 30
) -> list[str]:
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


class DeliveryFailed(KafkaError):
    """`flush()` could not deliver some records; they are kept and retried by the next flush.

    `retriable` follows the cause, so callers that back off on retriable Kafka errors
    (the generator's sink) keep retrying through a broker outage."""

    def __init__(self, count: int, cause: BaseException) -> None:
        super().__init__(f"kafka: {count} records not delivered: {type(cause).__name__}: {cause}")
        self.retriable = isinstance(cause, OSError) or bool(getattr(cause, "retriable", False))


class KafkaProducerTransport(Producer):
    """Batched producer: one v2 record batch per partition, one ProduceRequest per broker.

    Why not `KafkaProducer.send`: it cost ~80 µs of CPU per record here (accumulator lock,
    per-record future, sender thread, and kafka-python's pure-Python CRC32C when the `crc32c`
    C package is missing, as it was then), i.e. 3,000-11,000 events/s. `send()`
    here only appends to a per-partition list (same murmur2 partitioner as Kafka, `partition_for`);
    when a partition holds `batch_size` bytes or the oldest record is `linger_ms` old, all
    partitions are encoded with kafka-python's batch builder and sent with acks=all, one request
    in flight, so per-partition order holds across retries. Retriable errors (broker down, leader
    moved) refresh metadata and retry with backoff for `delivery_timeout_s`; then `flush()` raises
    `DeliveryFailed` and keeps the batches, which go first on the next attempt: nothing is dropped.
    Records wait in memory until a later `send` passes the linger or the caller flushes (callers
    flush at least every second). Like a non-idempotent Kafka producer, a retry after a lost
    acknowledgement can write a batch twice (at-least-once).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 100,
        batch_size: int = 1_000_000,
        max_request_size: int = 1024 * 1024,
        delivery_timeout_s: float = 60.0,
        request_timeout_ms: int = 30000,
        **config,
    ) -> None:
        from kafka.net.compat import KafkaNetClient

        self._client = KafkaNetClient(
            bootstrap_servers=bootstrap, client_id="obs-producer", request_timeout_ms=request_timeout_ms, **config
        )
        self._client.get_broker_version(request_timeout_ms)  # fail fast (retriable) if the broker is down
        self.linger_s, self.batch_size, self.max_request_size = linger_ms / 1000, batch_size, max_request_size
        self.delivery_timeout_s, self.request_timeout_ms = delivery_timeout_s, request_timeout_ms
        self._partition_counts: dict[str, int] = {}
        self._pending: dict[tuple[str, int], list] = {}  # (topic, partition) -> [bytes, [(ts, key, value)]]
        self._oldest = 0.0
        self._unsent: list[dict[tuple[str, int], tuple[bytearray, int]]] = []  # built rounds, oldest first
        self._round_robin = 0

    def send(self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None) -> None:
        size = len(value) + (len(key) if key else 0) + 24
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(f"record of {size} bytes exceeds max_request_size {self.max_request_size}")
        n = self._partition_counts.get(topic) or self._partitions(topic)
        p = partition_for(key, n, self._round_robin)
        if key is None:
            self._round_robin += 1
        buf = self._pending.get((topic, p))
        if self._pending and (
            (buf is not None and buf[0] + size > self.batch_size) or time.monotonic() - self._oldest > self.linger_s
        ):
            self._ship()  # before appending: if it raises, this record was not taken and can be re-sent
            buf = None
        if buf is None:
            if not self._pending:
                self._oldest = time.monotonic()
            buf = self._pending[(topic, p)] = [0, []]
        buf[0] += size
        buf[1].append((int(time.time() * 1000) if timestamp_ms is None else timestamp_ms, key, value))

    def flush(self) -> None:
        """Returns once everything sent is acked (acks=all); raises `DeliveryFailed` (keeping the records) if not."""
        self._ship()

    def close(self) -> None:
        self.flush()
        self._client.close()

    def discard(self) -> None:
        """Close the connection, dropping unsent batches (no flush: it could retry for delivery_timeout_s)."""
        self._pending, self._unsent = {}, []
        self._client.close()

    def _ship(self) -> None:
        if self._pending:
            self._unsent.append({tp: (_encode_batch(recs), len(recs)) for tp, (_size, recs) in self._pending.items()})
            self._pending = {}
        while self._unsent:
            self._deliver(self._unsent[0])  # removes what was acked; raises with the rest kept
            self._unsent.pop(0)

    def _deliver(self, batches: dict[tuple[str, int], tuple[bytearray, int]]) -> None:
        from kafka.protocol.producer import ProduceRequest
        from kafka.structs import TopicPartition

        deadline, backoff = time.monotonic() + self.delivery_timeout_s, 0.1
        while True:
            errors: dict[tuple[str, int], BaseException] = {}
            by_leader: dict[int, list[tuple[str, int]]] = {}
            for tp in batches:
                leader = self._client.cluster.leader_for_partition(TopicPartition(*tp))
                if leader is None or leader < 0:
                    errors[tp] = NodeNotReadyError(f"no leader known for {tp}")
                else:
                    by_leader.setdefault(leader, []).append(tp)
            for node, tps in by_leader.items():
                topics: dict[str, list] = {}
                for t, p in tps:
                    topics.setdefault(t, []).append(
                        ProduceRequest.TopicProduceData.PartitionProduceData(index=p, records=batches[(t, p)][0])
                    )
                request = ProduceRequest(
                    acks=-1,
                    timeout_ms=self.request_timeout_ms,
                    min_version=3,
                    max_version=9,
                    topic_data=[ProduceRequest.TopicProduceData(name=t, partition_data=d) for t, d in topics.items()],
                )
                try:
                    response = self._client.send_and_receive(node, request, timeout_ms=self.request_timeout_ms)
                except (KafkaError, OSError) as exc:  # connection refused/lost, timeout: retriable
                    errors.update((tp, exc) for tp in tps)
                    continue
                for topic_response in response.responses:
                    for pr in topic_response.partition_responses:
                        tp = (topic_response.name, pr.index)
                        if pr.error_code:
                            errors[tp] = for_code(pr.error_code)(pr.error_message or "")
                        else:
                            batches.pop(tp, None)
            errors = {tp: e for tp, e in errors.items() if tp in batches}
            if not batches:
                return
            cause = next(iter(errors.values()), KafkaTimeoutError("no produce response for some partitions"))
            failure = DeliveryFailed(sum(n for _b, n in batches.values()), cause)
            if not failure.retriable or time.monotonic() + backoff > deadline:
                raise failure
            log.warning(
                "kafka: produce failed, retrying", partitions=len(batches), error=str(cause)[:200], retry_in_s=backoff
            )
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            wait_ms = min(self.request_timeout_ms, max(100, int((deadline - time.monotonic()) * 1000)))
            self._client.poll(timeout_ms=wait_ms, future=self._client.cluster.request_update())  # leader may have moved

    def _partitions(self, topic: str) -> int:
        """Partition count of a topic, from broker metadata (cached: partitions are only ever added)."""
        cluster, deadline = self._client.cluster, time.monotonic() + self.request_timeout_ms / 1000
        future = cluster.add_topic(topic)
        while not cluster.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"kafka: no metadata for topic {topic}")
            self._client.poll(timeout_ms=1000, future=future)
            if future.is_done and not cluster.partitions_for_topic(topic):
                time.sleep(0.2)
                future = cluster.request_update()
        self._partition_counts[topic] = n = len(cluster.partitions_for_topic(topic))
        return n


def _encode_batch(records: list[tuple[int, bytes | None, bytes]]) -> bytearray:
    """One uncompressed v2 record batch (kafka-python's encoder; CRC32C by the `crc32c` C package)."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 62,
    )
    append = builder.append
    for offset, (ts, key, value) in enumerate(records):
        append(offset, ts, key, value, ())
    return builder.build()


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
