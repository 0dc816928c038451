"""Where events go: the transport (publish) or a JSONL file (`--to-file`).

Publishing retries with backoff instead of failing: a broker restart must not
lose valid events or crash the generator. Progress shows as a tqdm bar on a
terminal and as periodic plain log lines otherwise.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from observability.logs import get_logger
from observability.settings import Settings
from observability.transport import create_producer

log = get_logger(__name__)

MAX_BACKOFF_S = 10.0
# A valid event line may be up to 1 MiB; leave room for the record around it.
KAFKA_MAX_REQUEST_BYTES = 2 * 1024 * 1024


class PublishRejected(RuntimeError):
    """The transport refused this record for good (e.g. too large); retrying cannot help."""


class PublishFailed(RuntimeError):
    """The transport kept failing (disk full, broker down) for longer than the sink's patience."""


class TransportSink:
    """Publishes through `observability.transport` (local log or Kafka)."""

    def __init__(self, settings: Settings, give_up_after_s: float | None = None) -> None:
        """give_up_after_s: how long one send/flush keeps retrying a failing transport before
        raising PublishFailed; None (the generator) retries until it works again."""
        self.settings = settings
        self.give_up_after_s = give_up_after_s
        self.failed = False
        extra = {"max_request_size": KAFKA_MAX_REQUEST_BYTES} if settings.transport == "kafka" else {}
        self.producer = _retry(lambda: create_producer(settings, **extra), "connect", give_up_after_s)
        self.events_topic = settings.raw_events_topic
        self.dead_letter_topic = settings.dead_letter_topic
        self.target = f"{settings.transport}:{self.events_topic}"

    def send(self, topic: str, value: bytes, key: bytes | None, timestamp_ms: int | None) -> None:
        self._call(lambda: self.producer.send(topic, value, key, timestamp_ms=timestamp_ms), "send")

    def flush(self) -> None:
        """Returns once everything sent is durable (the local log's fsync, Kafka's acks)."""
        self._call(self.producer.flush, "flush")

    def close(self) -> None:
        """Flushes, then releases the producer; after a PublishFailed, one try and no retries."""
        try:
            _retry(self.producer.close, "close", 0.0 if self.failed else self.give_up_after_s)
        except PublishFailed as exc:
            log.error("transport: closing with unpublished records", error=str(exc))

    def _call(self, fn, what: str):
        try:
            return _retry(fn, what, self.give_up_after_s)
        except PublishFailed:
            self.failed = True
            raise


class FileSink:
    """Writes event JSON lines to a file instead of publishing (dead letters are not written)."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")  # noqa: SIM115 - open for the sink's life, closed by close()
        self.events_topic = settings.raw_events_topic
        self.dead_letter_topic = settings.dead_letter_topic
        self.target = str(self.path)

    def send(self, topic: str, value: bytes, key: bytes | None, timestamp_ms: int | None) -> None:
        if topic == self.events_topic:
            self._f.write(value + b"\n")

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _retriable(exc: BaseException) -> bool:
    """Broker down, connection lost, timeouts, disk trouble: worth retrying. A refusal is not."""
    if isinstance(exc, OSError):
        return True
    from kafka.errors import KafkaError

    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def _retry(fn, what: str, give_up_after_s: float | None = None):
    delay = 0.2
    deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
    while True:
        try:
            return fn()
        except Exception as exc:  # broker down, disk full, ...: back off and keep going
            if not _retriable(exc) and what == "send":
                raise PublishRejected(f"{type(exc).__name__}: {exc}") from exc
            if deadline is not None and time.monotonic() + delay > deadline:
                raise PublishFailed(f"{what}: {type(exc).__name__}: {exc}") from exc
            log.warning("transport error, retrying", action=what, error=str(exc)[:300], retry_in_s=delay)
            time.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)


class Progress:
    """tqdm on a terminal, a log line every `every_s` seconds otherwise."""

    def __init__(self, total: int | None, desc: str, unit: str, every_s: float = 5.0) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = 0
        self._t0 = self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr)

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            rate = self.done / max(now - self._t0, 1e-9)
            log.info(f"{self.desc} progress", done=self.done, total=self.total, per_s=round(rate), **info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
