"""`python -m anomaly_detection.forecaster [--once]`: next-hour forecasts per service and their SLA risk.

The command line only; the cycle is `anomaly_detection.forecast_service`, the
models `anomaly_detection.forecasting`, the risk `anomaly_detection.sla_risk`.
"""

from __future__ import annotations

import argparse
import threading

import duckdb

from observability import metrics
from observability.logs import get_logger
from observability.run_loop import run_loop, stop_on_signals
from observability.settings import get_settings
from observability.store import StoreBusy

log = get_logger(__name__)
DESCRIPTION = (
    "`python -m anomaly_detection.forecaster [--once]`: forecast each service's request rate, error rate and "
    "p95/p99 latency for the next hour (5-minute steps, prediction intervals) into `forecasts`, and the chance "
    "of crossing its SLAs into `sla_risk`."
)
MAX_BACKOFF_SECONDS = 300.0
TRANSIENT_ERRORS = (StoreBusy, duckdb.Error, OSError)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.forecaster", description=DESCRIPTION)
    p.add_argument("--once", action="store_true", help="forecast once from the windows stored now, then exit")
    args = p.parse_args(argv)
    from anomaly_detection.forecast_service import ForecastService

    settings = get_settings()
    service = ForecastService(settings)
    if args.once:
        run = service.run_once(force=True)
        service.heartbeat()
        print(run.summary())
        return 0
    run_forever(service, settings.forecast_interval_seconds)
    return 0


def observe(run) -> None:
    """A forecaster cycle as metrics: forecast rows written, series skipped, SLA pairs at risk, data lag."""
    if not run.refreshed:
        return
    metrics.record_batch(
        metrics.FORECASTER,
        kind="series",
        rows_in=run.series,
        rows_out=run.rows,
        out_kind="forecast",
        rejects={"too_little_history": len(run.skipped)},
        newest_event_time=run.origin,
    )
    metrics.BACKLOG.labels(metrics.FORECASTER).set(len(run.at_risk))


def run_forever(service, interval: float, stop: threading.Event | None = None) -> None:
    """Look for a new complete bucket every `interval` seconds until SIGTERM/SIGINT (or `stop`)."""
    stop = stop if stop is not None else stop_on_signals()
    metrics.serve(metrics.FORECASTER, service.settings)
    run_loop(
        metrics.instrumented(metrics.FORECASTER, service.run_once, observe),
        interval,
        stop=stop,
        max_backoff=MAX_BACKOFF_SECONDS,
        expected=TRANSIENT_ERRORS,
        heartbeat=service.heartbeat,
        logger=log,
    )
    log.info("forecaster stopped")


if __name__ == "__main__":
    raise SystemExit(main())
