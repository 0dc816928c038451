"""SLA risk: the chance that a service's next hour crosses one of its SLAs, read off the forecast.

The SLAs a service is held to:
- p99 latency: `SERVICE_P99_SLAS[service]`, else one learned from its own
  1-minute history (max of 1.25 x the median and the 99th percentile, as the
  detector learns its p95 SLA), else none (too little history: under 30 windows);
- p95 latency: `SERVICE_SLAS[service]` where configured (the detector's SLA);
- error rate: `ERROR_RATE_SLA` (every service).

Probability: the forecast stores a central value and a `level` % interval per
step. Each step's value is taken as a two-piece normal through those three
points (the half facing the SLA sets the spread), so the chance of exceeding
the SLA is exactly (100 - level) / 2 % at the interval's bound and 50 % at the
prediction. The hour's probability is the highest step's: a lower bound of the
chance that at least one step crosses (steps are correlated, so not much lower).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist

import numpy as np
import pandas as pd

from observability import forecasts

CONFIGURED = "configured"
LEARNED = "learned"
LEARN_QUANTILE = 0.99
LEARN_HEADROOM = 1.25
LEARN_MIN_WINDOWS = 30
RISK_COLUMNS = list(forecasts.RISK_COLUMNS)  # the sla_risk table's columns


@dataclass(frozen=True)
class Sla:
    metric: str
    value: float
    source: str


def learned_threshold(history: pd.DataFrame, column: str) -> float | None:
    """max(headroom x median, the quantile) of a service's 1-minute `column`, or None under the minimum windows."""
    if history is None or history.empty or column not in history:
        return None
    v = history.loc[(history["request_count"] > 0) & history[column].notna(), column]
    if len(v) < LEARN_MIN_WINDOWS:
        return None
    return float(max(LEARN_HEADROOM * v.median(), v.quantile(LEARN_QUANTILE)))


def slas_for(service: str, history: pd.DataFrame, settings) -> list[Sla]:
    """The SLAs `service` is held to (module docstring), given its own 1-minute history."""
    out = []
    if service in settings.service_p99_slas:
        out.append(Sla("p99_latency_ms", float(settings.service_p99_slas[service]), CONFIGURED))
    else:
        learned = learned_threshold(history, "p99_latency_ms")
        if learned is not None:
            out.append(Sla("p99_latency_ms", learned, LEARNED))
    if service in settings.service_slas:
        out.append(Sla("p95_latency_ms", float(settings.service_slas[service]), CONFIGURED))
    out.append(Sla("error_rate", float(settings.error_rate_sla), CONFIGURED))
    return out


def exceed_probability(predicted, lower, upper, sla: float, level: float) -> np.ndarray:
    """Per step, P(value > sla) under the two-piece normal through (lower, predicted, upper) at `level` %."""
    predicted, lower, upper = (np.asarray(a, dtype=float) for a in (predicted, lower, upper))
    z = NormalDist().inv_cdf(0.5 + level / 200.0)
    above = sla >= predicted
    half = np.where(above, upper - predicted, predicted - lower)
    scale = np.maximum(half / z, 1e-12 * np.maximum(1.0, np.abs(predicted)))
    std = (sla - predicted) / scale
    phi = np.vectorize(NormalDist().cdf, otypes=[float])
    return 1.0 - phi(std)


def assess(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    settings,
    made_at: datetime,
) -> pd.DataFrame:
    """One sla_risk row per (service, SLA) for the services in `forecasts` (see the module docstring)."""
    rows = []
    level = settings.forecast_interval_level
    threshold = settings.forecast_risk_probability
    for service, fc in forecasts.groupby("service", sort=True):
        own = history[history["service"] == service] if history is not None and not history.empty else history
        for sla in slas_for(str(service), own, settings):
            steps = fc[fc["metric"] == sla.metric].sort_values("target_time")
            if steps.empty:
                continue
            p = exceed_probability(steps["predicted"], steps["lower"], steps["upper"], sla.value, level)
            crossing = steps["target_time"].to_numpy()[p >= threshold]
            rows.append(
                dict(
                    service=str(service),
                    metric=sla.metric,
                    sla=sla.value,
                    sla_source=sla.source,
                    probability=float(p.max()),
                    crossing_time=pd.Timestamp(crossing[0]).to_pydatetime() if len(crossing) else None,
                    predicted_peak=float(steps["predicted"].max()),
                    at_risk=bool(p.max() >= threshold),
                    made_at=made_at,
                )
            )
    return pd.DataFrame(rows, columns=RISK_COLUMNS)
