"""Keeps the job's streaming queries running: starts them, restarts a failed one, stops them all.

Why: Structured Streaming ends a query on the first exception of a batch (a
locked store, a broker away). In continuous mode a failed query is restarted
from its checkpoint after a backoff that doubles per failure in a row and
resets once the restarted query completes a batch; in `--available-now` mode a
failure is the run's result (exit 1) and the other queries are stopped.

Some queries start lazily (the dead_letters, logs and otel_metrics queries: a running query
keeps a ~100 MB Python source process): they start once `arrived(name)` says
they have work, asked again every `heartbeat_every` seconds in continuous mode.

`settled` is called once after query starts, when every query started since
has read rows in a micro-batch (or ended): no query is planning then (queries
start only on the supervisor's thread, and a Python data source plans at
`load()` and in its stream's first micro-batch with data), the moment
`spark.planners.reap` needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from observability.logs import get_logger
from observability.run_loop import Backoff
from observability.settings import Settings

log = get_logger("spark.supervisor")
POLL_SECONDS = 0.5  # each query's awaitTermination slice: how fast a stop or a failure is seen


class QuerySupervisor:
    """Runs `starters[name](available_now)` queries until they finish, fail (available-now) or `stop`."""

    def __init__(
        self,
        starters: dict[str, Callable[[bool], object]],
        *,
        available_now: bool,
        stop: threading.Event,
        arrived: Callable[[str], bool] = lambda name: True,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_every: float = 10.0,
        restart_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        settled: Callable[[], None] | None = None,
    ) -> None:
        self.starters = starters
        self.available_now = available_now
        self.stop = stop
        self.arrived = arrived
        self.heartbeat = heartbeat
        self.heartbeat_every = heartbeat_every
        self.clock = clock
        self.settled = settled
        self.queries: dict[str, object] = {}
        self._started: dict[str, object] = {}  # queries started and not yet seen to complete a batch
        self.backoffs = {name: Backoff(interval=restart_after, max_wait=60.0) for name in starters}

    def run(self, eager: Iterable[str], lazy: Iterable[str] = ()) -> int:
        """Start `eager` now and `lazy` once arrived; 0, or 1 when a query failed in available-now mode."""
        for name in eager:
            self._start(name)
        waiting = self.start_arrived(list(lazy))
        rc = 0
        last_beat = 0.0
        while self.queries:
            if self.stop.is_set():
                self.stop_all()
                break
            rc |= self._watch_once()
            self._settle_once()
            if not self.available_now and self.clock() - last_beat >= self.heartbeat_every:
                last_beat = self.clock()
                waiting = self.start_arrived(waiting)
                self._beat()
        if rc and self.available_now:
            self.stop_all()
        return rc

    def _watch_once(self) -> int:
        """One look at each query: note progress, drop the finished, restart (or give up on) the failed."""
        rc = 0
        for name, q in list(self.queries.items()):
            q.awaitTermination(POLL_SECONDS)
            if q.isActive:
                if self.backoffs[name].failures and q.lastProgress is not None:
                    self.backoffs[name].success()  # the restarted query completed a batch
                continue
            exc = q.exception()
            if exc is None:
                self.queries.pop(name)  # available-now finished (or stopped)
                continue
            log.error("query failed", query=name, error=str(exc)[:2000])
            if self.available_now:
                self.queries.pop(name)
                rc = 1
                continue
            delay = self.backoffs[name].failure()
            log.info("restarting query", query=name, after_seconds=delay)
            if self.stop.wait(delay):
                break
            self._start(name)
        return rc

    def _start(self, name: str) -> None:
        self.queries[name] = self._started[name] = self.starters[name](self.available_now)

    def _settle_once(self) -> None:
        """`settled()`, once every query started since the last call has read rows or gone."""
        if not self._started:
            return
        for name, q in list(self._started.items()):
            if self.queries.get(name) is not q or _read_rows(q):
                self._started.pop(name)
        if self._started or self.settled is None:
            return
        try:
            self.settled()
        except Exception as exc:  # noqa: BLE001 - freeing memory must never stop the job
            log.warning("settled hook failed", error=str(exc))

    def start_arrived(self, waiting: list[str]) -> list[str]:
        """Start the waiting queries whose records arrived; returns those still waiting."""
        still = []
        for name in waiting:
            try:
                arrived = self.arrived(name)
            except Exception as exc:  # noqa: BLE001 - a broker away: ask again next time
                log.warning("cannot read the topic's end offsets", query=name, error=str(exc))
                arrived = False
            if arrived:
                log.info("starting query", query=name)
                self._start(name)
            elif not self.available_now:
                still.append(name)
        return still

    def stop_all(self) -> None:
        for q in self.queries.values():
            q.stop()

    def _beat(self) -> None:
        if self.heartbeat is None:
            return
        try:
            self.heartbeat()
        except Exception as exc:  # noqa: BLE001 - a busy store must not stop the job
            log.warning("heartbeat failed", error=str(exc))


def _read_rows(query) -> bool:
    """Whether one of the query's recent micro-batches read input (so its source has been planned)."""
    return any((p.get("numInputRows") or 0) > 0 for p in (query.recentProgress or ()))


class RecordArrivals:
    """Whether a lazy query (dead_letters, logs, otel_metrics) has work: it ran before or its topic holds a record."""

    def __init__(self, settings: Settings, topics: dict[str, str]) -> None:
        self.settings = settings
        self.topics = topics
        self._probe = None  # a transport reader, opened on the first question

    def __call__(self, stream_name: str) -> bool:
        if (self.settings.checkpoint_dir / stream_name / "offsets").is_dir():
            return True
        if self._probe is None:
            from observability.transport import create_reader

            self._probe = create_reader(self.settings)
        return sum(self._probe.end_offsets(self.topics[stream_name]).values()) > 0

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
