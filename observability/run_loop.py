"""The loop of every long-running stage: a cycle every interval, backing off while it fails.

Why one helper: the detector, the narrator and the Spark job each had their own
loop, with different backoff and stop handling (the narrator installed no
signal handler, so SIGTERM killed it mid-cycle). Here:

- `run_loop(cycle, interval, stop=...)` calls `cycle()` every `interval`
  seconds (measured from the start of each cycle) until `stop` is set.
- A cycle that raises, or whose result `failed(result)` calls a failure, waits
  `interval * 2**failures` (the exponent at most `max_doublings`), capped at
  `max_backoff`; the first success resets it. An exception never ends the loop:
  one of `expected` (a locked store, a broker outage) is a warning, anything
  else is logged with its traceback.
- `stop_on_signals()` returns an event that SIGTERM and SIGINT set: the cycle
  in progress finishes, the wait is cut short, the loop returns.
- `heartbeat()` (optional) runs after each successful cycle, at most every
  `heartbeat_every` seconds; a failing heartbeat is logged, never fatal.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from observability.logs import get_logger

log = get_logger(__name__)


@dataclass
class Backoff:
    """The wait before the next cycle: `interval` after a success, doubling per failure in a row."""

    interval: float
    max_wait: float = 60.0
    max_doublings: int = 6
    failures: int = 0

    def success(self) -> float:
        self.failures = 0
        return self.interval

    def failure(self) -> float:
        self.failures += 1
        return min(self.max_wait, self.interval * 2 ** min(self.failures, self.max_doublings))


def stop_on_signals(
    stop: threading.Event | None = None, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
) -> threading.Event:
    """An event that SIGTERM and SIGINT set (installs the handlers: call it from the main thread)."""
    stop = stop if stop is not None else threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for sig in signals:
        signal.signal(sig, on_signal)
    return stop


def run_loop(
    cycle: Callable[[], Any],
    interval: float,
    *,
    stop: threading.Event,
    max_backoff: float = 60.0,
    max_doublings: int = 6,
    expected: tuple[type[BaseException], ...] = (),
    failed: Callable[[Any], bool] | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_every: float = 0.0,
    logger=None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run `cycle()` until `stop` is set; returns how many cycles ran."""
    logger = logger or log
    backoff = Backoff(interval, max_backoff, max_doublings)
    cycles = 0
    last_beat: float | None = None
    while not stop.is_set():
        started = clock()
        cycles += 1
        try:
            result = cycle()
        except expected as exc:
            wait = backoff.failure()
            logger.warning(
                "cycle failed, backing off", error=str(exc)[:300], failures=backoff.failures, wait_seconds=wait
            )
        except Exception as exc:  # never die on one bad cycle
            wait = backoff.failure()
            logger.exception(
                "cycle crashed, backing off", error=str(exc)[:300], failures=backoff.failures, wait_seconds=wait
            )
        else:
            if failed is not None and failed(result):
                wait = backoff.failure()
                logger.warning("cycle reported a failure, backing off", failures=backoff.failures, wait_seconds=wait)
            else:
                wait = backoff.success()
                if heartbeat is not None and (last_beat is None or clock() - last_beat >= heartbeat_every):
                    last_beat = clock()
                    _beat(heartbeat, logger)
        stop.wait(max(0.0, started + wait - clock()))
    return cycles


def _beat(heartbeat: Callable[[], None], logger) -> None:
    try:
        heartbeat()
    except Exception as exc:  # noqa: BLE001 - a busy store must not stop the loop
        logger.warning("heartbeat failed", error=str(exc)[:300])
