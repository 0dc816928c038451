"""`python -m anomaly_detection.notifier [--once]`: notify incident events to every alert channel.

Opened, escalated, summarised and resolved incidents (and reminders), and SLAs the
forecaster puts at risk (a low-severity `forecast`, `ALERT_FORECASTS`), go to the
generic webhooks (`ALERT_WEBHOOK_URLS`), Slack-compatible webhooks
(`ALERT_SLACK_WEBHOOK_URLS`) and email (`ALERT_SMTP_HOST`, `ALERT_EMAIL_TO`);
see `anomaly_detection.alerting`.
"""

from __future__ import annotations

import argparse
import threading

import duckdb

from anomaly_detection.alerting.service import NotifierService
from observability import metrics
from observability.logs import get_logger
from observability.run_loop import run_loop, stop_on_signals
from observability.settings import get_settings
from observability.store import StoreBusy

log = get_logger(__name__)
MAX_BACKOFF_SECONDS = 60.0
TRANSIENT_ERRORS = (StoreBusy, duckdb.Error, OSError)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.notifier", description=__doc__.splitlines()[0])
    p.add_argument("--once", action="store_true", help="record new incident events, send what is due, then exit")
    args = p.parse_args(argv)
    settings = get_settings()
    service = NotifierService(settings)
    if args.once:
        try:
            print(service.run_once().line())
        finally:
            service.close()
        return 0
    run_forever(service, settings.alert_interval_seconds)
    return 0


def run_forever(service: NotifierService, interval: float, stop: threading.Event | None = None) -> None:
    """A cycle every `interval` seconds until SIGTERM/SIGINT; a locked store backs off, never ends it."""
    stop = stop if stop is not None else stop_on_signals()
    metrics.serve(metrics.NOTIFIER, service.s)
    try:
        run_loop(
            metrics.instrumented(metrics.NOTIFIER, service.run_once, service.observe),
            interval,
            stop=stop,
            max_backoff=MAX_BACKOFF_SECONDS,
            expected=TRANSIENT_ERRORS,
            heartbeat=service.heartbeat,
            heartbeat_every=30.0,
            logger=log,
        )
    finally:
        service.close()
    log.info("notifier stopped")


if __name__ == "__main__":
    raise SystemExit(main())
