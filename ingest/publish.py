"""The single publisher thread: every request's records go through one producer, then one flush.

The local-log producer is not thread-safe, and a flush (fsync, or Kafka
acks=all) costs about the same for one record as for thousands. So request
handlers (the HTTP event loop, the gRPC worker threads) hand their records to
this thread and wait on a future; the thread takes every job that is waiting,
sends them all, flushes once and then resolves their futures. Several
concurrent requests share one flush, which is what makes tens of thousands of
spans per second possible. A future resolves only after flush() returned, so
the receiver never acknowledges data that is not durable.

Group commit: a request handler says it will publish (`expecting()`) before its
request goes to the mapping workers. While such requests are on their way the
thread waits for them, up to GROUP_COMMIT_WAIT_S after the first job it holds,
and flushes them together: under load the requests otherwise arrive one at a
time, each paying a flush (a write per partition, then an fsync per partition:
~1-2 CPU-ms per flush here). A lone request (nothing else expected) is flushed
at once.

When the transport fails (Kafka down, the local log unwritable) the jobs of
that flush fail with `TransportUnavailable` (the receiver answers 503 or
UNAVAILABLE and the client retries); the thread keeps running and the next
job tries again. A failed flush may have written part of its records, so a
retry can duplicate them: spans carry a deterministic event_id for that.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from observability import metrics
from observability.logs import get_logger
from observability.settings import Settings
from observability.transport import Producer, create_producer

log = get_logger(__name__)

# A Kafka flush retries for this long before it raises: well inside the SDK exporters'
# 10 s timeout, so the client hears 503 and retries instead of timing out.
KAFKA_DELIVERY_TIMEOUT_S = 5.0
KAFKA_MAX_REQUEST_BYTES = 2 * 1024 * 1024  # an event may be up to 1 MiB
MAX_RECORDS_PER_FLUSH = 200_000  # bounds the memory one flush holds
GROUP_COMMIT_WAIT_S = 0.010  # the longest a held job waits for expected ones before its flush


class TransportUnavailable(RuntimeError):
    """The transport could not durably accept the records; retrying later can succeed."""


@dataclass
class _Job:
    records: list[tuple[str, bytes | None, bytes, int]]
    dead_letters: list[bytes]
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> int:
        return len(self.records) + len(self.dead_letters)


class Expectation:
    """A request that will publish (or give up): counted by the publisher until it does either."""

    __slots__ = ("_publisher", "_open")

    def __init__(self, publisher: Publisher) -> None:
        self._publisher, self._open = publisher, True

    def close(self) -> None:
        """The request will not publish (any more): the publisher stops waiting for it."""
        publisher = self._publisher
        with publisher._cond:
            if self._open:
                self._open = False
                publisher._expected -= 1
                publisher._cond.notify()


@dataclass
class PublisherStats:
    records: int = 0
    dead_letters: int = 0
    flushes: int = 0
    group_waits: int = 0  # times a held job waited for expected ones (group commit)
    failures: int = 0
    last_error: str | None = None
    last_ok_monotonic: float | None = None


def producer_factory(settings: Settings) -> Callable[[], Producer]:
    extra = {}
    if settings.transport == "kafka":
        extra = {"max_request_size": KAFKA_MAX_REQUEST_BYTES, "delivery_timeout_s": KAFKA_DELIVERY_TIMEOUT_S}
    return lambda: create_producer(settings, **extra)


class Publisher:
    """Owns the producer; `publish()` returns a future that resolves once the records are durable."""

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        dead_letter_topic: str,
        *,
        discard_on_failure: bool = False,
        connect_in_background: bool = False,
    ) -> None:
        self._make_producer = make_producer
        self._discard_on_failure = discard_on_failure
        self._connect_in_background = connect_in_background
        self._dead_letter_topic = dead_letter_topic
        self._producer: Producer | None = None
        self._connector: threading.Thread | None = None
        self._jobs: deque[_Job] = deque()
        self._expected = 0  # open Expectations: requests being mapped that will publish
        self._cond = threading.Condition()
        self._stopping = False
        self.stats = PublisherStats()
        self.healthy = False  # until a producer exists
        self._thread = threading.Thread(target=self._run, name="ingest-publisher", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        # The local log's buffers of a failed flush are dropped with the producer (the client
        # re-sends them); Kafka's producer keeps them for its own re-send (at-least-once).
        # Connecting to Kafka can take its admin step's 30 s when the broker is away: that happens
        # on a side thread, and requests meanwhile get 503 at once instead of waiting.
        return cls(
            producer_factory(settings),
            settings.dead_letter_topic,
            discard_on_failure=settings.transport == "local",
            connect_in_background=settings.transport == "kafka",
        )

    @contextlib.contextmanager
    def expecting(self) -> Iterator[Expectation]:
        """Around a request's mapping and `publish(..., expected=)`: while it is open the thread
        may hold other jobs back (up to GROUP_COMMIT_WAIT_S) to flush them with this one."""
        expectation = Expectation(self)
        with self._cond:
            self._expected += 1
        try:
            yield expectation
        finally:
            expectation.close()

    def publish(self, records, dead_letters=(), expected: Expectation | None = None) -> Future:
        job = _Job(list(records), list(dead_letters))
        metrics.EVENTS_IN.labels(metrics.INGEST, "record").inc(job.size)
        with self._cond:
            if self._stopping:
                job.future.set_exception(TransportUnavailable("the receiver is shutting down"))
            else:
                self._jobs.append(job)
                self._cond.notify()
        if expected is not None:
            expected.close()
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Publish what is queued, then close the producer."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the thread ------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if not self._jobs:
                return None
            self._wait_for_expected()
            batch, size = [], 0
            while self._jobs and (not batch or size + self._jobs[0].size <= MAX_RECORDS_PER_FLUSH):
                job = self._jobs.popleft()
                batch.append(job)
                size += job.size
            return batch

    def _wait_for_expected(self) -> None:
        """(Lock held, a job queued.) Wait while jobs are expected, up to GROUP_COMMIT_WAIT_S."""
        deadline = time.monotonic() + GROUP_COMMIT_WAIT_S
        if self._expected > 0:
            self.stats.group_waits += 1
        while self._expected > 0 and not self._stopping and sum(j.size for j in self._jobs) < MAX_RECORDS_PER_FLUSH:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _connect(self) -> Producer | None:
        """The producer, creating it if needed; None (and the reason recorded) while it cannot be had.

        In the background mode a connector thread does the creating and this returns None until it
        succeeded, so a broker that is away costs each request a quick 503, not the connect timeout.
        """
        if self._producer is not None:
            return self._producer
        if not self._connect_in_background:
            self._create()
            return self._producer
        if self._connector is None or not self._connector.is_alive():
            self._connector = threading.Thread(target=self._create, name="ingest-connect", daemon=True)
            self._connector.start()
        return None

    def _create(self) -> None:
        try:
            producer = self._make_producer()
        except Exception as exc:  # broker away, log directory unusable: the next publish tries again
            self._failed([], exc)
            return
        self._producer = producer
        self.healthy = True
        log.info("transport connected")

    def _run(self) -> None:
        self._connect()
        while True:
            batch = self._take()
            if batch is None:
                break
            self._publish(batch)
        if self._producer is not None:
            try:
                self._producer.close()
            except Exception as exc:  # nothing is waiting on it any more
                log.warning("producer close failed", error=str(exc)[:300])

    def _publish(self, batch: list[_Job]) -> None:
        t0 = time.perf_counter()
        producer = self._connect()
        if producer is None:
            err = TransportUnavailable(f"not connected to the transport: {self.stats.last_error or 'connecting'}")
            for job in batch:
                job.future.set_exception(err)
            return
        try:
            dl_topic = self._dead_letter_topic
            for job in batch:
                producer.send_many(job.records)
                if job.dead_letters:
                    producer.send_many((dl_topic, None, dl, None) for dl in job.dead_letters)
            producer.flush()
        except Exception as exc:  # Kafka down, disk full, ...: tell every waiting request
            self._failed(batch, exc)
            return
        n_rec = sum(len(j.records) for j in batch)
        n_dl = sum(len(j.dead_letters) for j in batch)
        s = self.stats
        s.records += n_rec
        s.dead_letters += n_dl
        s.flushes += 1
        s.last_ok_monotonic = time.monotonic()
        metrics.record_batch(
            metrics.INGEST, seconds=time.perf_counter() - t0, rows_out=n_rec, rejects={"dead_letter": n_dl}
        )
        if not self.healthy:
            log.info("transport recovered", records=n_rec)
        self.healthy = True
        for job in batch:
            job.future.set_result(None)

    def _failed(self, batch: list[_Job], exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        self.stats.failures += 1
        self.stats.last_error = reason
        metrics.CYCLE_FAILURES.labels(metrics.INGEST).inc()
        if self.healthy:
            log.warning("transport cannot accept, answering unavailable", error=reason)
        self.healthy = False
        if self._discard_on_failure:
            self._producer = None
        err = TransportUnavailable(reason)
        for job in batch:
            job.future.set_exception(err)
