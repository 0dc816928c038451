"""A micro-batch's silver, gold and error_messages, written after its commit, beside the next batch.

Why: computing the layers (`observability.layers.write_batch_layers`: the trace joins,
self times and sampling in DuckDB, then the Parquet files) took ~4.5 of a 500,000-event
batch's ~11 s in the driver, on one core, while Spark's workers waited for the next
batch (issue 17). Now the batch's commit queues its bronze files and returns; a thread
in the driver writes the layers while Spark runs the next batch.

Exactly once, as before: the batch's own transaction inserts its `layer_queue` row
(`enqueue`, in `spark.sink.DuckDBSink.write_batch`). The thread writes the layer files
(names derive from the batch's bronze files, so a rerun replaces them whole) and then,
in one transaction, adds the batch's error_messages rows and deletes its queue row. A
kill before that transaction leaves the row, and the next run writes the same files
again and adds the rows once. Batches are taken oldest first. A batch whose layers fail
is retried with backoff; after `max_attempts` tries its row stays in the table with its
last error, for a person to see (the health check reports it), the queue moves on, and the
batch is tried again at each start-up and whenever the queue is idle (a full disk may have
room again: nothing committed is dropped for good).

Memory stays bounded: the job waits after each commit until at most one batch is queued
(`wait_until(1)`), so one layers computation runs beside one Spark batch. An
`--available-now` run waits for the queue to empty before it exits (`wait_until(0)`).

The job hands each committed batch to the thread in memory (`notify(key, files)`), so a batch
costs the queue one DuckDB connection (its commit); the table is read at start-up (what a
killed run left), after a failure (the retry), and when idle for `idle_seconds`. Each
connection to the shared DuckDB file costs ~30 ms of CPU to open and close.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import pandas as pd

from observability import layers, tables
from observability.faults import fault_point
from observability.logs import get_logger
from observability.memory import release_memory
from observability.settings import Settings
from observability.store import Store

log = get_logger("spark.layer_queue")

_MAX_BACKOFF_SECONDS = 30.0


def enqueue(con, batch_key: str, bronze_files: list[str], now) -> None:
    """Inside the batch's commit transaction: its layers are to be written."""
    if not bronze_files:
        return
    con.execute(
        f"""INSERT OR REPLACE INTO {tables.LAYER_QUEUE} (batch_key, bronze_files, queued_at, attempts, last_error)
            VALUES (?, ?, ?, 0, NULL)""",
        [batch_key, list(bronze_files), now],
    )


def _commit(con, batch_key: str, error_messages: pd.DataFrame) -> bool:
    """The batch's error_messages and the removal of its queue row, in one transaction."""
    queued = con.execute(f"SELECT 1 FROM {tables.LAYER_QUEUE} WHERE batch_key = ?", [batch_key]).fetchall()
    if not queued:  # written already (nothing to add twice)
        return False
    layers.insert_error_messages(con, error_messages)
    con.execute(f"DELETE FROM {tables.LAYER_QUEUE} WHERE batch_key = ?", [batch_key])
    return True


class LayerQueue:
    """The driver thread that writes queued batches' layers, oldest first.

    `write(settings, bronze_files) -> error_messages rows` computes and writes one batch's
    silver and gold files (`observability.layers.write_batch_layers`); `idle_seconds` is
    how often an idle queue looks for rows that another run left; a failed batch is retried
    after `backoff_seconds`, doubled at each further failure (at most 30 s)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        write: Callable[[Settings, list[str]], pd.DataFrame] = layers.write_batch_layers,
        max_attempts: int = layers.LAYER_MAX_ATTEMPTS,
        idle_seconds: float = 60.0,
        backoff_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.write = write
        self.max_attempts = max_attempts
        self.idle_seconds = idle_seconds
        self.backoff_seconds = backoff_seconds
        self._cond = threading.Condition()
        self._wakes = 0  # notify() calls: the thread looks again after each
        self._done = 0  # batches finished (written or given up on): waiters look again after each
        self._stopped = False
        self._handed: deque[tuple[str, list[str]]] = deque()  # committed batches handed over in memory
        self._busy = False  # a batch's layers are being written
        self._recheck = True  # read the table next (start-up, after a failure)
        self._retry_given_up = True  # try the batches given up on once more (start-up, when idle)
        self._retries: deque[tuple[str, list[str], int]] = deque()
        self._thread: threading.Thread | None = None
        self.written = 0

    # -- control ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="layer-queue", daemon=True)
            self._thread.start()

    def notify(self, batch_key: str | None = None, bronze_files: list[str] | None = None) -> None:
        """A batch was queued (committed with its `layer_queue` row); with its key and files, the
        thread takes it without reading the table."""
        with self._cond:
            if batch_key is not None and bronze_files:
                self._handed.append((batch_key, list(bronze_files)))
            self._wakes += 1
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in progress, leave the rest queued (durable: the next run writes them)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_until(self, max_pending: int, stop: threading.Event | None = None) -> int:
        """Block until at most `max_pending` batches are queued (or `stop` is set, or the thread
        stopped); returns the number still queued."""
        while True:
            with self._cond:
                seen = self._done
                n = len(self._handed) + self._busy  # the backpressure counts in memory
            if max_pending == 0 and n == 0:  # "empty" is the table's word: a failed batch waits there
                n = layers.layer_backlog(self.store, self.max_attempts).pending
            if n <= max_pending or (stop is not None and stop.is_set()) or not self._alive():
                return n
            with self._cond:
                self._cond.wait_for(
                    lambda s=seen: self._done != s or self._stopped or (stop is not None and stop.is_set()),
                    timeout=1.0,
                )

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    # -- the thread ---------------------------------------------------------------
    def _next(self) -> tuple[str, list[str], int] | None:
        row = self.store.fetch_one(
            f"""SELECT batch_key, bronze_files, attempts FROM {tables.LAYER_QUEUE}
                WHERE attempts < ? ORDER BY queued_at, batch_key LIMIT 1""",
            [self.max_attempts],
        )
        return (row[0], list(row[1]), int(row[2])) if row else None

    def _given_up(self) -> list[tuple[str, list[str], int]]:
        rows = self.store.fetch_all(
            f"""SELECT batch_key, bronze_files, attempts FROM {tables.LAYER_QUEUE}
                WHERE attempts >= ? ORDER BY queued_at, batch_key""",
            [self.max_attempts],
        )
        return [(r[0], list(r[1]), int(r[2])) for r in rows]

    def _load_retries(self) -> None:
        """Batches given up on are tried once more at start-up and whenever the queue was idle
        (the disk that was full may have room again): nothing committed is dropped for good.
        The list is read when that moment comes, so a batch given up on later waits for the next."""
        with self._cond:
            load, self._retry_given_up = self._retry_given_up, False
        if not load:
            return
        try:
            retries = self._given_up()
        except Exception as exc:  # noqa: BLE001 - the next idle spell tries again
            log.warning("layer queue: could not read the queue", error=str(exc))
            return
        with self._cond:
            self._retries = deque(retries)

    def _take(self) -> tuple[str, list[str], int] | None:
        """The next batch: first what the table holds when it is to be read, then what was handed,
        then the batches given up on that are due for another try."""
        self._load_retries()
        with self._cond:
            recheck, self._recheck = self._recheck, False
        if recheck:
            try:
                item = self._next()
            except Exception as exc:  # noqa: BLE001 - the store may be busy or gone for a while: look again
                log.warning("layer queue: could not read the queue", error=str(exc))
                with self._cond:
                    self._recheck = True
                return None
            if item is not None:
                with self._cond:
                    self._recheck = True  # the table may hold more
                    self._handed = deque(h for h in self._handed if h[0] != item[0])
                    self._busy = True
                return item
        with self._cond:
            if self._handed:
                key, files = self._handed.popleft()
                self._busy = True
                return key, files, 0
            if self._retries:
                self._busy = True
                return self._retries.popleft()
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                seen = self._wakes
            item = self._take()
            if item is None:
                with self._cond:
                    woke = self._cond.wait_for(
                        lambda s=seen: self._stopped or self._wakes != s, timeout=self.idle_seconds
                    )
                    if not woke:  # idle: look for rows another run left, retry those given up on
                        self._recheck = self._retry_given_up = True
                continue
            self._process(*item)
            with self._cond:
                self._busy = False
                self._done += 1
                self._cond.notify_all()

    def _process(self, batch_key: str, bronze_files: list[str], attempts: int) -> None:
        t0 = time.monotonic()
        try:
            errors = self.write(self.settings, bronze_files)
            release_memory(gc_generation=1)  # the layers' DuckDB and Arrow pages, before the next batch's
            fault_point("spark.layers.before_commit")
            committed = self.store.write(lambda con: _commit(con, batch_key, errors))
        except Exception as exc:  # noqa: BLE001 - one batch's failure must not stop the job or the queue
            self._failed(batch_key, attempts + 1, exc)
            return
        if committed:
            self.written += 1
        log.info(
            "layers written",
            batch_key=batch_key,
            bronze_files=len(bronze_files),
            error_messages=len(errors),
            committed=committed,
            seconds=round(time.monotonic() - t0, 2),
        )

    def _failed(self, batch_key: str, attempts: int, exc: Exception) -> None:
        with self._cond:
            self._recheck = True  # the retry (and its attempt count) comes from the table
        error = f"{type(exc).__name__}: {exc}"[:1000]
        given_up = attempts >= self.max_attempts
        log.error(
            "layers failed: left in the queue, retried at start-up and when idle"
            if given_up
            else "layers failed: will retry",
            batch_key=batch_key,
            attempts=attempts,
            error=error,
        )
        try:
            self.store.execute(
                f"UPDATE {tables.LAYER_QUEUE} SET attempts = ?, last_error = ? WHERE batch_key = ?",
                [attempts, error, batch_key],
            )
        except Exception as update_exc:  # noqa: BLE001 - the next try finds the row as it was
            log.warning("layer queue: could not record the failure", error=str(update_exc))
        if not given_up:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopped,
                    timeout=min(_MAX_BACKOFF_SECONDS, self.backoff_seconds * 2.0 ** (attempts - 1)),
                )
