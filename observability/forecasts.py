"""Reads of the forecaster's tables, for the dashboard and the notifier (one definition of "current").

`sla_risk` holds only the newest assessment (the forecaster replaces it each
run), so "at risk now" is `SELECT ... FROM sla_risk WHERE at_risk`:
`AT_RISK_SQL`. `forecasts` keeps FORECAST_KEEP_HOURS of runs; the current
forecast of a service is its newest `made_at`.
"""

from __future__ import annotations

import pandas as pd

from observability import tables
from observability.store import Store

FORECAST_COLUMNS = ("service", "metric", "target_time", "predicted", "lower", "upper", "made_at")
RISK_COLUMNS = (
    "service",
    "metric",
    "sla",
    "sla_source",
    "probability",
    "crossing_time",
    "predicted_peak",
    "at_risk",
    "made_at",
)
_RISK_SELECT = ", ".join(RISK_COLUMNS)
AT_RISK_SQL = f"SELECT {_RISK_SELECT} FROM {tables.SLA_RISK} WHERE at_risk ORDER BY probability DESC, service, metric"
CURRENT_FORECASTS_SQL = f"""
    SELECT f.service, f.metric, f.target_time, f.predicted, f.lower, f.upper, f.made_at
    FROM {tables.FORECASTS} f
    JOIN (SELECT service, max(made_at) AS made_at FROM {tables.FORECASTS} GROUP BY service) newest
      USING (service, made_at)
    ORDER BY f.service, f.metric, f.target_time
"""


def sla_risk(store: Store) -> pd.DataFrame:
    """Every (service, SLA) of the newest assessment, the riskiest first."""
    return store.fetch_df(
        f"SELECT {_RISK_SELECT} FROM {tables.SLA_RISK} ORDER BY at_risk DESC, probability DESC, service, metric"
    )


def at_risk(store: Store) -> pd.DataFrame:
    """The (service, SLA) pairs whose chance of being crossed within the hour reaches FORECAST_RISK_PROBABILITY."""
    return store.fetch_df(AT_RISK_SQL)


def current_forecasts(store: Store) -> pd.DataFrame:
    """The newest forecaster run of each service: one row per (service, metric, target_time)."""
    return store.fetch_df(CURRENT_FORECASTS_SQL)
