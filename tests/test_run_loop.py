"""observability.run_loop: the shared loop of the detector (and, once wired, the narrator and the Spark job).

Real threads and real signals. What the loop logs is read from a recording logger handed in
(`logger=`): the process-wide structlog setup differs once an Airflow test has configured it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from observability.run_loop import Backoff, run_loop, stop_on_signals


class Busy(Exception):
    """An expected, transient failure (a locked store)."""


class RecordingLogger:
    """Records (level, event, fields) of each call, as the loop calls structlog's bound logger."""

    def __init__(self):
        self.records: list[tuple[str, str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **kw: self.records.append((level, event, kw))

    def fields(self, event: str, name: str) -> list:
        return [kw[name] for _, e, kw in self.records if e == event]

    def levels(self, event: str) -> list[str]:
        return [level for level, e, _ in self.records if e == event]


def test_backoff_doubles_per_failure_is_capped_and_resets_after_a_success():
    b = Backoff(interval=0.5, max_wait=10.0, max_doublings=6)
    assert [b.failure() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.success() == 0.5 and b.failures == 0
    assert b.failure() == 1.0, "a failure after a success is the first again"
    slow = Backoff(interval=1.0, max_wait=1e9, max_doublings=3)
    assert [slow.failure() for _ in range(5)] == [2.0, 4.0, 8.0, 8.0, 8.0], "the exponent stops at max_doublings"


def test_failures_back_off_exponentially_and_a_success_starts_over():
    """Outcomes: busy, busy, crash, ok, busy, then stop. The waits between cycle starts follow."""
    log = RecordingLogger()
    stop = threading.Event()
    outcomes = ["busy", "busy", "crash", "ok", "busy"]
    starts: list[float] = []
    interval = 0.02

    def cycle():
        starts.append(time.monotonic())
        outcome = outcomes[len(starts) - 1]
        if len(starts) == len(outcomes):
            stop.set()
        if outcome == "busy":
            raise Busy("database is locked")
        if outcome == "crash":
            raise ValueError("a bad row")
        return outcome

    assert run_loop(cycle, interval, stop=stop, expected=(Busy,), logger=log) == 5
    waits = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    expected = [interval * 2, interval * 4, interval * 8, interval]
    assert all(w >= e * 0.95 for w, e in zip(waits, expected, strict=True)), (waits, expected)
    assert log.fields("cycle failed, backing off", "failures") == [1, 2, 1]
    assert log.fields("cycle failed, backing off", "wait_seconds") == [interval * 2, interval * 4, interval * 2]
    assert log.levels("cycle failed, backing off") == ["warning"] * 3, "an expected failure is a warning"
    assert log.fields("cycle crashed, backing off", "failures") == [3]
    assert log.levels("cycle crashed, backing off") == ["exception"], "an unexpected error keeps its traceback"
    assert log.fields("cycle crashed, backing off", "error") == ["a bad row"]


def test_a_result_that_reports_failure_backs_off_like_an_exception():
    """The narrator's case: the model server is down, the cycle returns normally but must back off."""
    log = RecordingLogger()
    stop = threading.Event()
    results = [True, True, False]  # True = the model server was down

    def cycle():
        down = results.pop(0)
        if not results:
            stop.set()
        return down

    assert run_loop(cycle, 0.01, stop=stop, failed=bool, max_backoff=0.03, logger=log) == 3
    assert log.fields("cycle reported a failure, backing off", "wait_seconds") == [0.02, 0.03]


def test_heartbeat_after_successes_only_throttled_and_never_fatal():
    log = RecordingLogger()
    now = [0.0]
    stop = threading.Event()
    outcomes = ["ok", "ok", "busy", "ok", "ok", "ok"]
    beats: list[float] = []

    def cycle():
        now[0] += 10.0  # each cycle takes 10 s of the fake clock: the waits are all over at once
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.set()
        if outcome == "busy":
            raise Busy("locked")

    def heartbeat():
        beats.append(now[0])
        if len(beats) == 2:
            raise Busy("the heartbeat's own write was locked out")

    cycles = run_loop(
        cycle,
        1.0,
        stop=stop,
        expected=(Busy,),
        heartbeat=heartbeat,
        heartbeat_every=25.0,
        clock=lambda: now[0],
        logger=log,
    )
    assert cycles == 6
    # successes at t=10, 20, 40, 50, 60: beats at 10, then >= 25 s later: 40 (fails, logged), then 60 is only 20 s after.
    assert beats == [10.0, 40.0]
    assert log.fields("heartbeat failed", "error") == ["the heartbeat's own write was locked out"]


class RecordedStop(threading.Event):
    """A stop event that records each wait's timeout and returns at once (the fake clock's waits)."""

    def __init__(self):
        super().__init__()
        self.timeouts: list[float] = []

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        return self.is_set()


@pytest.fixture
def restore_signal_handlers():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_cycle_lets_it_finish_and_starts_no_other(sig, restore_signal_handlers):
    stop = stop_on_signals()
    done = []

    def cycle():
        os.kill(os.getpid(), sig)  # handled in this (main) thread, at once
        done.append("finished after the signal")

    t0 = time.monotonic()
    assert run_loop(cycle, 30.0, stop=stop) == 1
    assert done == ["finished after the signal"]
    assert time.monotonic() - t0 < 25, "no 30 s wait after a stop"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_wait_cuts_it_short(sig, restore_signal_handlers):
    stop = stop_on_signals()
    ran = []
    threading.Timer(0.3, os.kill, (os.getpid(), sig)).start()  # arrives while the loop waits 60 s
    t0 = time.monotonic()
    assert run_loop(lambda: ran.append(1), 60.0, stop=stop) == 1
    assert time.monotonic() - t0 < 30, "the 60 s wait was cut short by the signal"


def test_a_stop_set_from_another_thread_ends_the_wait():
    stop = threading.Event()
    ran = []
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert run_loop(lambda: ran.append(1), 60.0, stop=stop) == 1
    assert time.monotonic() - t0 < 30, "the 60 s wait was cut short by the stop event"


def test_the_interval_counts_from_each_cycle_start():
    """A cycle that takes 4 s of a 5 s interval is followed by 1 s of waiting, not 5."""
    now = [0.0]
    stop = RecordedStop()

    def cycle():
        now[0] += 4.0
        if len(stop.timeouts) == 2:
            stop.set()
        if len(stop.timeouts) == 1:
            raise Busy("locked")  # then the backoff (10 s) counts from the start too

    assert run_loop(cycle, 5.0, stop=stop, expected=(Busy,), clock=lambda: now[0]) == 3
    assert stop.timeouts == [1.0, 6.0, 1.0]
