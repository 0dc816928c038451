"""The forecaster's cycle: read the 1-minute windows, forecast, assess SLA risk, store both at once.

One cycle refits only when a new 5-minute bucket has completed since the last
run (the loop looks every FORECAST_INTERVAL_SECONDS, so the heartbeat stays
fresh while the forecast is refreshed every 5 minutes). `forecasts` keeps
FORECAST_KEEP_HOURS of runs (readers take the newest `made_at` per service);
`sla_risk` holds the newest run's assessment only. Both are written in one
transaction, so a reader never sees a forecast without its risk rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from anomaly_detection import data, forecasting, sla_risk
from observability import forecasts, tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store, utcnow

log = get_logger(__name__)
FORECAST_COLUMNS = list(forecasts.FORECAST_COLUMNS)


@dataclass
class ForecastRun:
    origin: datetime | None = None  # end of the last complete bucket the forecast starts from
    made_at: datetime | None = None
    services: int = 0
    series: int = 0
    rows: int = 0
    at_risk: list[str] = field(default_factory=list)  # "service:metric" with probability >= the threshold
    skipped: list[str] = field(default_factory=list)  # "service:metric" with too little history
    refreshed: bool = False  # False: no new complete bucket since the last run (or no data at all)

    def summary(self) -> str:
        return (
            f"forecaster summary: refreshed={self.refreshed} origin={self.origin} services={self.services} "
            f"series={self.series} rows={self.rows} at_risk={','.join(self.at_risk) or '-'} "
            f"skipped={','.join(self.skipped) or '-'}"
        )


def cutoff(store: Store) -> datetime | None:
    """Windows ending at or before this are final: the stream watermark, else the newest window's end."""
    wm = data.watermark(store)
    if wm is not None:
        return pd.Timestamp(wm).to_pydatetime()
    row = store.fetch_one(f"SELECT max(window_end) FROM {tables.SERVICE_METRICS}")
    return pd.Timestamp(row[0]).to_pydatetime() if row and row[0] is not None else None


def bucket_floor(t: datetime) -> datetime:
    return pd.Timestamp(t).floor(forecasting.STEP_FREQ).to_pydatetime()


class ForecastService:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store.from_settings(settings, max_wait_seconds=settings.detect_lock_wait_seconds)
        self._last_origin: datetime | None = None
        self._migrated = False

    def run_once(self, *, force: bool = False) -> ForecastRun:
        if not self._migrated:  # an existing DATA_DIR may predate the forecasts tables (migration 11)
            self.store.migrate()
            self._migrated = True
        end = cutoff(self.store)
        if end is None:
            log.info("forecaster: no service_metrics yet")
            return ForecastRun()
        origin = bucket_floor(end)
        if not force and self._last_origin is not None and origin <= self._last_origin:
            return ForecastRun(origin=origin)
        start = origin - timedelta(days=self.settings.forecast_history_days)
        minutes = data.metrics(self.store, start, origin, final_before=origin)
        history = forecasting.series(forecasting.buckets(minutes, origin))
        fc, skipped = forecasting.forecast(history, level=self.settings.forecast_interval_level)
        made_at = utcnow()
        fc = fc.assign(made_at=made_at)
        risk = sla_risk.assess(fc, minutes, self.settings, made_at)
        self._write(fc[FORECAST_COLUMNS], risk, made_at)
        self._last_origin = origin
        run = ForecastRun(
            origin=origin,
            made_at=made_at,
            services=fc["service"].nunique(),
            series=len(history) - len(skipped),
            rows=len(fc),
            at_risk=[f"{r.service}:{r.metric}" for r in risk.itertuples() if r.at_risk],
            skipped=[f"{k.service}:{k.metric}" for k in skipped],
            refreshed=True,
        )
        log.info(
            "forecast stored",
            origin=str(origin),
            services=run.services,
            rows=run.rows,
            at_risk=run.at_risk,
            skipped=run.skipped,
        )
        return run

    def _write(self, fc: pd.DataFrame, risk: pd.DataFrame, made_at: datetime) -> None:
        keep_from = made_at - timedelta(hours=self.settings.forecast_keep_hours)

        def work(con) -> None:
            if len(fc):
                con.register("_fc", fc)
                con.execute(f"INSERT INTO {tables.FORECASTS} SELECT {', '.join(FORECAST_COLUMNS)} FROM _fc")
                con.unregister("_fc")
            con.execute(f"DELETE FROM {tables.FORECASTS} WHERE made_at < ?", [keep_from])
            con.execute(f"DELETE FROM {tables.SLA_RISK}")
            if len(risk):
                con.register("_risk", risk)
                con.execute(f"INSERT INTO {tables.SLA_RISK} SELECT {', '.join(sla_risk.RISK_COLUMNS)} FROM _risk")
                con.unregister("_risk")

        self.store.write(work)

    def heartbeat(self) -> None:
        self.store.heartbeat(tables.FORECASTER_HEARTBEAT, f"last origin {self._last_origin}")
