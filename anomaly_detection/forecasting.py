"""Next-hour forecasts per service: 1-minute windows -> 5-minute buckets -> statsforecast models.

Why these choices:
- 5-minute buckets, 12 steps: the horizon is one hour, and a 1-minute p99 is too
  noisy to extrapolate; a bucket's percentile is the request-weighted mean of its
  minutes' (the dashboard's convention for multi-minute buckets).
- statsforecast (Nixtla) fits many short series fast with no compile step
  (2.x needs no numba). The model depends on how much history a series has, so a
  service minutes old still gets a forecast:
    two days or more  MSTL with a daily season (288 buckets), trend by AutoETS;
    an hour or more   AutoETS without season;
    15 minutes or more the historic mean (its interval from the residual spread);
    less              no forecast (listed as skipped).
- Request rate and latency are modelled in log1p space (multiplicative noise,
  never negative once transformed back); the error rate as is, clipped to [0, 1].

Only complete buckets are used: a bucket counts once its last minute has ended
at or before the cutoff (the stream's watermark), so a half-filled bucket never
looks like a traffic drop.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from observability.tables import FORECAST_METRICS

STEP = timedelta(minutes=5)
STEP_FREQ = "5min"
HORIZON_STEPS = 12  # one hour
SEASON_BUCKETS = 288  # one day of 5-minute buckets
MIN_BUCKETS = 3  # below this a series gets no forecast
MIN_ETS_BUCKETS = 12  # below this the historic mean stands in for AutoETS
LOG_METRICS = frozenset({"request_rate", "p95_latency_ms", "p99_latency_ms"})
# MSTL's interval comes from its trend model alone, so it leaves out the error of a daily season
# estimated from only a few days: its 90 % interval held 73 % of generator outcomes (`evaluate
# forecast`, seed 11). Its half-widths are scaled by this factor (in model space): 89-93 % then.
INTERVAL_WIDENING = {"mstl_daily": 1.5}


@dataclass(frozen=True)
class SeriesKey:
    service: str
    metric: str


def buckets(minutes: pd.DataFrame, cutoff: datetime) -> pd.DataFrame:
    """service_metrics rows -> one row per (service, complete 5-minute bucket) with FORECAST_METRICS."""
    cols = ["service", "bucket", *FORECAST_METRICS]
    if minutes is None or minutes.empty:
        return pd.DataFrame(columns=cols)
    m = minutes[pd.to_datetime(minutes["window_end"]) <= pd.Timestamp(cutoff)].copy()
    m["bucket"] = pd.to_datetime(m["window_start"]).dt.floor(STEP_FREQ)
    m = m[m["bucket"] + STEP <= pd.Timestamp(cutoff)]
    if m.empty:
        return pd.DataFrame(columns=cols)
    req = m["request_count"].astype(float)
    for q in ("p95_latency_ms", "p99_latency_ms"):
        has = m[q].notna()
        m[f"{q}_w"] = np.where(has, m[q].fillna(0.0) * req, 0.0)
        m[f"{q}_n"] = np.where(has, req, 0.0)
    g = m.groupby(["service", "bucket"], sort=True)
    s = g[
        ["request_count", "error_count", "p95_latency_ms_w", "p95_latency_ms_n", "p99_latency_ms_w", "p99_latency_ms_n"]
    ]
    a = s.sum().reset_index()
    out = pd.DataFrame({"service": a["service"], "bucket": a["bucket"]})
    out["request_rate"] = a["request_count"] / STEP.total_seconds()
    out["error_rate"] = np.where(a["request_count"] > 0, a["error_count"] / a["request_count"].clip(lower=1), 0.0)
    for q in ("p95_latency_ms", "p99_latency_ms"):
        n = a[f"{q}_n"]
        out[q] = np.where(n > 0, a[f"{q}_w"] / n.where(n > 0, 1.0), np.nan)
    return out[cols]


def _regular(values: pd.Series) -> pd.Series:
    """One value per 5-minute step from the first to the last bucket; gaps interpolated."""
    full = pd.date_range(values.index.min(), values.index.max(), freq=STEP_FREQ)
    return values.reindex(full).interpolate(limit_direction="both")


def series(bucketed: pd.DataFrame) -> dict[SeriesKey, pd.Series]:
    """(service, metric) -> its regular 5-minute series (index: bucket start), untransformed."""
    out: dict[SeriesKey, pd.Series] = {}
    for service, g in bucketed.groupby("service", sort=True):
        g = g.set_index("bucket").sort_index()
        for metric in FORECAST_METRICS:
            v = g[metric].astype(float).dropna()
            if len(v):
                out[SeriesKey(str(service), metric)] = _regular(v)
    return out


def to_model_space(metric: str, y: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(y, 0.0)) if metric in LOG_METRICS else y


def from_model_space(metric: str, y: np.ndarray) -> np.ndarray:
    if metric in LOG_METRICS:
        return np.maximum(np.expm1(y), 0.0)
    return np.clip(y, 0.0, 1.0) if metric == "error_rate" else y


def model_tier(n: int) -> str | None:
    """Which model a series of `n` buckets gets (None: too short to forecast)."""
    if n >= 2 * SEASON_BUCKETS:
        return "mstl_daily"
    if n >= MIN_ETS_BUCKETS:
        return "ets"
    if n >= MIN_BUCKETS:
        return "mean"
    return None


def _model(tier: str):
    from statsforecast.models import MSTL, AutoETS, HistoricAverage

    if tier == "mstl_daily":
        return MSTL(season_length=SEASON_BUCKETS, trend_forecaster=AutoETS(model="ZZN"), alias="fc")
    if tier == "ets":
        return AutoETS(model="ZZN", season_length=1, alias="fc")
    return HistoricAverage(alias="fc")


FALLBACK = {"mstl_daily": "ets", "ets": "mean", "mean": None}


def _fit_tier(tier: str, frame: pd.DataFrame, h: int, level: int) -> pd.DataFrame:
    from statsforecast import StatsForecast

    sf = StatsForecast(models=[_model(tier)], freq=STEP_FREQ, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sf.forecast(df=frame, h=h, level=[level])


def forecast(
    history: dict[SeriesKey, pd.Series], *, h: int = HORIZON_STEPS, level: int = 90
) -> tuple[pd.DataFrame, list[SeriesKey]]:
    """Forecast every series `h` steps past its last bucket.

    Returns (rows: service, metric, target_time, predicted, lower, upper, model; the keys skipped for too
    little history). A tier whose fit raises falls back to the next simpler one for its series.
    """
    logging.getLogger("statsforecast").setLevel(logging.WARNING)
    ids: dict[str, SeriesKey] = {}
    by_tier: dict[str, list[pd.DataFrame]] = {}
    skipped: list[SeriesKey] = []
    for i, (key, s) in enumerate(sorted(history.items(), key=lambda kv: (kv[0].service, kv[0].metric))):
        tier = model_tier(len(s))
        if tier is None:
            skipped.append(key)
            continue
        uid = f"s{i}"
        ids[uid] = key
        y = to_model_space(key.metric, s.to_numpy(dtype=float))
        by_tier.setdefault(tier, []).append(pd.DataFrame({"unique_id": uid, "ds": s.index, "y": y}))
    parts = []
    while by_tier:
        tier, frames = by_tier.popitem()
        frame = pd.concat(frames, ignore_index=True)
        try:
            fc = _fit_tier(tier, frame, h, level)
        except Exception:  # noqa: BLE001 - a model that cannot fit these series: try the simpler one
            fallback = FALLBACK[tier]
            if fallback is None:
                raise
            by_tier.setdefault(fallback, []).extend(frames)
            continue
        fc["model"] = tier
        parts.append(fc)
    if not parts:
        return pd.DataFrame(
            columns=["service", "metric", "target_time", "predicted", "lower", "upper", "model"]
        ), skipped
    fc = pd.concat(parts, ignore_index=True)
    return _rows(fc, ids, level), skipped


def _rows(fc: pd.DataFrame, ids: dict[str, SeriesKey], level: int) -> pd.DataFrame:
    out = []
    for uid, g in fc.groupby("unique_id", sort=False):
        key = ids[str(uid)]
        m = g["fc"].to_numpy(dtype=float)
        widen = INTERVAL_WIDENING.get(str(g["model"].iloc[0]), 1.0)
        lo_m = m - widen * (m - g[f"fc-lo-{level}"].to_numpy(dtype=float))
        hi_m = m + widen * (g[f"fc-hi-{level}"].to_numpy(dtype=float) - m)
        pred, lo, hi = (from_model_space(key.metric, v) for v in (m, lo_m, hi_m))
        out.append(
            pd.DataFrame(
                {
                    "service": key.service,
                    "metric": key.metric,
                    "target_time": pd.to_datetime(g["ds"]).to_numpy(),
                    "predicted": pred,
                    "lower": np.fmin(lo, pred),  # fmin: a missing bound is the prediction
                    "upper": np.fmax(hi, pred),
                    "model": g["model"].to_numpy(),
                }
            )
        )
    rows = pd.concat(out, ignore_index=True)
    rows = rows[np.isfinite(rows["predicted"])]
    return rows.sort_values(["service", "metric", "target_time"], ignore_index=True)
