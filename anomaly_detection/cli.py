"""The detector's command line: one pass (`--once`) or the continuous loop.

`python -m anomaly_detection.detector` is the command (its module only calls
`main` here), so the name `detector` is left to what users type and the
`detectors/` package keeps the detectors themselves.
"""

from __future__ import annotations

import argparse
import threading
import time

import duckdb

from anomaly_detection.service import DetectionService
from observability import metrics
from observability.logs import get_logger
from observability.run_loop import run_loop, stop_on_signals
from observability.settings import get_settings
from observability.store import StoreBusy

log = get_logger(__name__)
DESCRIPTION = "`python -m anomaly_detection.detector [--once]`: score final windows, group incidents."
MAX_BACKOFF_SECONDS = 60.0
#: What a cycle may meet while the platform runs (a locked or missing DB): logged without a traceback.
TRANSIENT_ERRORS = (StoreBusy, duckdb.Error, OSError)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.detector", description=DESCRIPTION)
    p.add_argument("--once", action="store_true", help="score every final window not yet scored, then exit")
    p.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="never train a first model (rules and statistics only until one is promoted)",
    )
    p.add_argument("--no-publish", action="store_true", help="do not publish anomalies to the anomalies topic")
    args = p.parse_args(argv)
    settings = get_settings()
    service = DetectionService(settings, bootstrap_models=not args.no_bootstrap, publish=not args.no_publish)
    if args.once:
        r = service.run_once()
        service.close()
        print(
            f"detector summary: windows={r.windows} anomalies={r.anomalies} "
            f"incidents_changed={r.incidents_changed} watermark={r.watermark}"
        )
        return 0
    run_forever(service, settings.detect_interval_seconds)
    return 0


def observe(r) -> None:
    """A detector pass as metrics: windows scored in, anomalies out, lag of the stream's watermark."""
    metrics.record_batch(
        metrics.DETECTOR,
        kind="window",
        rows_in=r.windows,
        rows_out=r.anomalies,
        out_kind="anomaly",
        newest_event_time=r.watermark,
    )
    metrics.EVENTS_OUT.labels(metrics.DETECTOR, "incident_change").inc(r.incidents_changed)


class WhenFinal:
    """A cycle that runs `cycle()` as soon as `horizon()` has crossed a minute boundary (a window
    became final), and at least every `interval` seconds; otherwise it returns None.

    Why: scoring every DETECT_INTERVAL_SECONDS left a final window waiting up to that long (issue 17:
    an anomaly row within 75 s of a fault's onset); one read per poll costs far less than a cycle."""

    def __init__(self, cycle, horizon, interval: float, clock=time.monotonic) -> None:
        self.cycle, self.horizon, self.interval, self.clock = cycle, horizon, interval, clock
        self._last_run: float | None = None
        self._last_minute = None

    def __call__(self):
        due = self._last_run is None or self.clock() - self._last_run >= self.interval
        try:
            minute = self.horizon()
        except TRANSIENT_ERRORS:  # a locked store: the cycle meets it too, and reports it as a failed cycle
            minute, due = None, True
        minute = minute.replace(second=0, microsecond=0) if minute is not None else None
        if not due and (minute is None or (self._last_minute is not None and minute <= self._last_minute)):
            return None
        self._last_run = self.clock()
        result = self.cycle()
        self._last_minute = minute  # after a success only: a failed cycle is retried on the next poll
        return result


def run_forever(
    service: DetectionService, interval: float, stop: threading.Event | None = None, poll: float | None = None
) -> None:
    """Cycle when a window became final (checked every `poll` seconds, DETECT_POLL_SECONDS) and at
    least every `interval` seconds until SIGTERM/SIGINT (or `stop`); survive a locked or missing DB
    and a stopped stream, backing off exponentially up to a minute."""
    stop = stop if stop is not None else stop_on_signals()
    poll = min(interval, poll if poll is not None else service.settings.detect_poll_seconds)
    metrics.serve(metrics.DETECTOR, service.settings)
    try:
        run_loop(
            WhenFinal(metrics.instrumented(metrics.DETECTOR, service.run_once, observe), service.horizon, interval),
            poll,
            stop=stop,
            max_backoff=MAX_BACKOFF_SECONDS,
            expected=TRANSIENT_ERRORS,
            logger=log,
        )
    finally:
        service.close()
    log.info("detector stopped")
