"""Service-normalised window features, computed causally.

Every detector compares a window with its own service's recent past, so nothing
here names a service and a service never seen before gets a baseline from the
windows that precede it. All baselines are *causal*: a row's baseline uses only
rows strictly before it (shift then roll), so scoring a backlog gives the same
answer as scoring it one window at a time.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

KEY = ["service", "window_start"]
RAW_COLUMNS = (
    "request_count",
    "error_count",
    "error_rate",
    "avg_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
)
# Columns the multivariate models see (all relative to the service's own baseline).
MODEL_FEATURES = (
    "req_log_ratio",
    "err_excess_z",
    "p95_log_ratio",
    "avg_log_ratio",
    "p99_log_ratio",
    "p95_short_log_ratio",
)
ERROR_RATE_FLOOR = 0.005  # a service with no errors still has a non-zero expected rate
LOG_RATIO_SCALE_FLOOR = 0.05  # 5 % jitter is never news


def clean(windows: pd.DataFrame) -> pd.DataFrame:
    """Typed, sorted copy; missing/NaN/inf values become NaN, never an exception."""
    df = windows.copy()
    for col in RAW_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        df.loc[~np.isfinite(df[col]), col] = np.nan
    df["service"] = df["service"].astype(str)
    df["window_start"] = pd.to_datetime(df["window_start"])
    if "window_end" not in df.columns:
        df["window_end"] = df["window_start"] + pd.Timedelta(minutes=1)
    df["window_end"] = pd.to_datetime(df["window_end"])
    df["request_count"] = df["request_count"].fillna(0).clip(lower=0)
    df["error_count"] = df["error_count"].fillna(0).clip(lower=0)
    rate = df["error_count"] / df["request_count"].where(df["request_count"] > 0)
    df["error_rate"] = df["error_rate"].where(df["error_rate"].between(0, 1), rate).fillna(rate).fillna(0.0)
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)


def with_context(history: pd.DataFrame | None, windows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """History rows before each service's first scored window, then the windows.

    Returns the combined frame (sorted by service, time) and, for each row of
    `windows` in its original order, the position of that row in the frame.
    """
    w = windows.copy()
    w["_pos"] = np.arange(len(w))
    parts = [w]
    if history is not None and len(history):
        first = w.groupby("service")["window_start"].min()
        h = history[history["service"].isin(first.index)].copy()
        if len(h):
            h = h[h["window_start"] < h["service"].map(first)]
            h["_pos"] = -1
            parts.insert(0, h)
    if len(parts) > 1:
        with warnings.catch_warnings():  # all-NA columns in one part (missing latencies) are expected
            warnings.simplefilter("ignore", FutureWarning)
            frame = clean(pd.concat(parts, ignore_index=True))
    else:
        frame = clean(w)
    frame = frame.drop_duplicates(KEY, keep="last").sort_values(KEY, kind="stable").reset_index(drop=True)
    where = np.full(len(w), -1, dtype=int)
    scored = frame.index[frame["_pos"] >= 0]
    where[frame.loc[scored, "_pos"].to_numpy(dtype=int)] = scored.to_numpy()
    return frame, where


def rolling_baseline(frame: pd.DataFrame, col: str, window: int, min_periods: int) -> tuple[pd.Series, pd.Series]:
    """Causal rolling median and MAD-style scale (x1.4826) of one column per service.

    The scale is the rolling median of each past row's absolute deviation from
    its own causal median: like the MAD it survives up to half the window being
    an incident (an IQR would already break at a quarter).
    """
    keys = frame["service"]
    x = frame[col]
    shifted = x.groupby(keys, sort=False).shift(1)
    med = (
        shifted.groupby(keys, sort=False)
        .rolling(window, min_periods=min_periods)
        .median()
        .reset_index(level=0, drop=True)
        .sort_index()
    )
    dev = (x - med).abs().groupby(keys, sort=False).shift(1)
    mad = (
        dev.groupby(keys, sort=False)
        .rolling(window, min_periods=min_periods)
        .median()
        .reset_index(level=0, drop=True)
        .sort_index()
    )
    return med, mad * 1.4826


def build(frame: pd.DataFrame, *, window: int = 60, min_periods: int = 5, short: int = 5) -> pd.DataFrame:
    """Per-row features against the causal per-service baseline (`frame` from `with_context`)."""
    f = frame
    out = pd.DataFrame(index=f.index)
    out["service"] = f["service"]
    out["window_start"] = f["window_start"]
    req = f["request_count"]
    log_req = np.log1p(req).where(req > 0)  # no data is not "zero traffic"
    for col, src in (("p95", "p95_latency_ms"), ("avg", "avg_latency_ms"), ("p99", "p99_latency_ms")):
        out[f"log_{col}"] = np.log(f[src].where(f[src] > 0))
    out["log_req"] = log_req
    out["error_rate"] = f["error_rate"]
    # Baselines: medians, so an ongoing incident does not become its own baseline.
    keys = f["service"]
    er = f["error_rate"].where(req > 0)
    base_err, _ = rolling_baseline(pd.DataFrame({"service": keys, "er": er}), "er", window, min_periods)
    base_err = base_err.clip(lower=0)
    out["base_error_rate"] = base_err
    out["history_n"] = f.groupby(keys, sort=False).cumcount()
    tmp = out.assign(log_req=log_req)
    for name in ("log_req", "log_p95", "log_avg", "log_p99"):
        med, scale = rolling_baseline(tmp, name, window, min_periods)
        out[f"base_{name}"] = med
        out[f"scale_{name}"] = np.maximum(scale.fillna(0), LOG_RATIO_SCALE_FLOOR)
    # Relative features (NaN baseline = not enough history -> neutral 0).
    out["req_log_ratio"] = (out["log_req"] - out["base_log_req"]).fillna(0.0)
    for col in ("p95", "avg", "p99"):
        out[f"{col}_log_ratio"] = (out[f"log_{col}"] - out[f"base_log_{col}"]).fillna(0.0)
    be = np.maximum(base_err.fillna(ERROR_RATE_FLOOR), ERROR_RATE_FLOOR)
    binom_sd = np.sqrt(be * (1 - be) / np.maximum(req, 1))
    out["err_excess_z"] = (
        ((f["error_rate"] - be) / np.maximum(binom_sd, 1e-6)).where(req > 0, 0.0).fillna(0.0).clip(-20, 50)
    )
    # Short-term level of p95 (median of the last `short` windows incl. this one) for slow drifts.
    out["p95_short_log_ratio"] = (
        out.groupby(keys, sort=False)["p95_log_ratio"]
        .rolling(short, min_periods=1)
        .median()
        .reset_index(level=0, drop=True)
        .sort_index()
    )
    out["has_baseline"] = out["base_log_req"].notna()
    return out


def model_matrix(feats: pd.DataFrame) -> np.ndarray:
    """The multivariate models' input: bounded, finite, service-normalised."""
    x = feats[list(MODEL_FEATURES)].to_numpy(dtype=float, copy=True)
    x[:, 1] = np.sign(x[:, 1]) * np.log1p(np.abs(x[:, 1]))  # error z on a log scale
    x = np.nan_to_num(x, nan=0.0, posinf=5.0, neginf=-5.0)
    return np.clip(x, -5.0, 5.0)


def time_of_day_profile(history: pd.DataFrame, min_days: int = 2) -> pd.DataFrame:
    """Per (service, hour of day) median and robust scale of log traffic.

    Only hours seen on at least `min_days` distinct days count: before that the
    rolling baseline stands in (a daily curve needs days of history to learn).
    """
    cols = ["service", "hour", "tod_log_req", "tod_scale_log_req"]
    if history is None or len(history) == 0:
        return pd.DataFrame(columns=cols)
    h = history[history["request_count"] > 0]
    if h.empty:
        return pd.DataFrame(columns=cols)
    ws = pd.to_datetime(h["window_start"])
    g = pd.DataFrame(
        {"service": h["service"], "hour": ws.dt.hour, "day": ws.dt.normalize(), "v": np.log1p(h["request_count"])}
    )
    agg = g.groupby(["service", "hour"]).agg(
        days=("day", "nunique"),
        med=("v", "median"),
        q75=("v", lambda s: s.quantile(0.75)),
        q25=("v", lambda s: s.quantile(0.25)),
    )
    agg = agg[agg["days"] >= min_days]
    out = pd.DataFrame(
        {
            "tod_log_req": agg["med"],
            "tod_scale_log_req": np.maximum((agg["q75"] - agg["q25"]) / 1.349, LOG_RATIO_SCALE_FLOOR),
        }
    ).reset_index()
    return out[cols]


def seasonal_traffic(feats: pd.DataFrame, profile: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Traffic baseline per row: time-of-day profile where learned, else the rolling one."""
    base, scale = feats["base_log_req"].copy(), feats["scale_log_req"].copy()
    if profile is not None and len(profile):
        key = pd.DataFrame({"service": feats["service"], "hour": pd.to_datetime(feats["window_start"]).dt.hour})
        m = key.merge(profile, on=["service", "hour"], how="left")
        tb = pd.Series(m["tod_log_req"].to_numpy(dtype=float), index=feats.index)
        ts = pd.Series(m["tod_scale_log_req"].to_numpy(dtype=float), index=feats.index)
        base = tb.where(tb.notna(), base)
        scale = ts.where(ts.notna(), scale)
    return base, scale
