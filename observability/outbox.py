"""Transactional outbox: what a stage publishes after a DuckDB commit.

Why: "commit the rows, then publish them" is two steps, and a crash between
them (kill -9, OOM, a broker outage that outlasts the process) left rows in
DuckDB that no later run published. Instead a stage writes the records it
will publish into `outbox` inside the SAME transaction as the data
(`stage(con, ...)`): the rows and their records commit together or not at
all. `OutboxPublisher.publish_pending()` then sends every unsent row of its
topics in `seq` order, waits for the transport's `flush()` (durable / acked),
and only then marks them sent. Each run or cycle of a stage starts by
publishing what is unsent, so a restart resends whatever a killed process
had committed but not confirmed.

Delivery is at least once: a crash after `flush()` and before the rows are
marked resends them. Every record's value carries its stable `id` (the
outbox row's id) first, so consumers de-duplicate on it. Sent rows are
pruned by retention (`observability.quality`), unsent ones never.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

import pandas as pd

from observability import tables
from observability.logs import get_logger
from observability.store import Store, utcnow
from observability.transport.base import Producer

log = get_logger(__name__)
CHUNK_ROWS = 10_000  # rows sent per flush(): bounds memory and what one failure resends


def encode_value(record_id: str, value: dict) -> str:
    """The message value: the stable id first, then the stage's fields (timestamps as text)."""
    return json.dumps({"id": record_id, **value}, separators=(",", ":"), default=str)


def stage(con, topic: str, records: Sequence[tuple[str, str | None, dict]], now: datetime | None = None) -> int:
    """Inside the caller's transaction: add (id, key, value) records for `topic`; returns how many.

    A record staged again under the same id (the stage rewrote its row) replaces
    the earlier one and is sent again.
    """
    if not records:
        return 0
    base = con.execute(f"SELECT coalesce(max(seq), 0) FROM {tables.OUTBOX}").fetchall()[0][0]
    rows = pd.DataFrame(
        {
            "id": [r[0] for r in records],
            "seq": range(base + 1, base + 1 + len(records)),
            "key": pd.Series([r[1] for r in records], dtype=object),
            "value": [encode_value(r[0], r[2]) for r in records],
        }
    )
    con.register("_outbox", rows)
    try:
        con.execute(
            f"""INSERT OR REPLACE INTO {tables.OUTBOX} (id, seq, topic, key, value, created_at, sent_at)
                SELECT id, seq, ?, key, value, ?, NULL FROM _outbox""",
            [topic, now or utcnow()],
        )
    finally:
        con.unregister("_outbox")
    return len(records)


def unsent_count(store: Store, topics: Sequence[str] | None = None) -> int:
    where, params = _topic_filter(topics)
    return int(store.fetch_one(f"SELECT count(*) FROM {tables.OUTBOX} WHERE sent_at IS NULL{where}", params)[0])


def _topic_filter(topics: Sequence[str] | None) -> tuple[str, list]:
    if not topics:
        return "", []
    return f" AND topic IN ({', '.join('?' for _ in topics)})", list(topics)


class OutboxPublisher:
    """Sends a stage's unsent outbox rows through a transport producer.

    `topics`: the stage's own topics (each stage sends only what it staged, so
    two stages never race to send one row). `connect`: makes a producer when
    none is open (first use, or after a failure discarded the last one).
    """

    def __init__(
        self, store: Store, topics: Sequence[str], connect: Callable[[], Producer], *, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        self.store = store
        self.topics = list(topics)
        self.connect = connect
        self.chunk_rows = chunk_rows
        self._producer: Producer | None = None

    def publish_pending(self) -> int:
        """Send every unsent row (oldest first), flush, then mark them sent; returns rows sent.

        Raises what the transport raised; the rows of the failed chunk stay unsent
        and the producer is discarded, so the next call resends them on a fresh one.
        """
        where, params = _topic_filter(self.topics)
        sent = 0
        while True:
            rows = self.store.fetch_all(
                f"SELECT id, topic, key, value FROM {tables.OUTBOX} WHERE sent_at IS NULL{where} ORDER BY seq LIMIT ?",
                [*params, self.chunk_rows],
            )
            if not rows:
                return sent
            self._send(rows)
            self._mark_sent([r[0] for r in rows])
            sent += len(rows)
            if len(rows) < self.chunk_rows:
                return sent

    def try_publish(self) -> int:
        """`publish_pending()` for a stage's loop: a transport failure is logged, not raised (retried next cycle)."""
        try:
            return self.publish_pending()
        except Exception as exc:  # noqa: BLE001 - the outbox keeps the rows; the stage must go on
            log.warning(
                "outbox: publishing failed, unsent rows kept for the next attempt",
                topics=self.topics,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return 0

    def _send(self, rows: list[tuple]) -> None:
        try:
            if self._producer is None:
                self._producer = self.connect()
            producer = self._producer
            for _id, topic, key, value in rows:
                producer.send(topic, value.encode(), key.encode() if key is not None else None)
            producer.flush()
        except BaseException:
            self._discard()
            raise

    def _mark_sent(self, ids: list[str]) -> None:
        frame = pd.DataFrame({"id": ids})
        now = utcnow()

        def work(con) -> None:
            con.register("_sent", frame)
            con.execute(f"UPDATE {tables.OUTBOX} SET sent_at = ? WHERE id IN (SELECT id FROM _sent)", [now])
            con.unregister("_sent")

        self.store.write(work)

    def _discard(self) -> None:
        """Drop the producer without delivering what it buffered: the outbox resends those rows."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.discard()
            except Exception as exc:  # noqa: BLE001 - it is being thrown away
                log.info("outbox: discarding the producer failed", error=str(exc)[:200])

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()
