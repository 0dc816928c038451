"""Robust statistics: median/MAD-style z-scores against each service's own baseline.

Traffic is compared with a time-of-day baseline once a few days of history exist
(rolling before that); latency and error rate with a rolling median and robust
scale. The error rate's scale never drops below its binomial noise at this
window's volume, so a quiet minute's single error is not a 10-sigma event.
A slow climb of the p95 (its short-term median far above baseline without a
step) is reported as latency_drift rather than a spike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomaly_detection import features
from anomaly_detection.detectors.base import BaseDetector, ramp, rounded


class RobustStatsDetector(BaseDetector):
    name = "robust_stats"

    def __init__(
        self,
        *,
        z_threshold: float = 6.0,
        window: int = 60,
        min_periods: int = 10,
        short_window: int = 5,
        tod_min_days: int = 2,
        min_requests: int = 10,
        seed: int = 0,
    ) -> None:
        self.z_threshold = z_threshold
        self.window = window
        self.min_periods = min_periods
        self.short_window = short_window
        self.tod_min_days = tod_min_days
        self.min_requests = min_requests
        self.seed = seed

    def _fit(self, history: pd.DataFrame) -> None:
        self.tod_profile_ = features.time_of_day_profile(history, self.tod_min_days)

    def _evaluate(self, frame: pd.DataFrame) -> pd.DataFrame:
        f = features.build(frame, window=self.window, min_periods=self.min_periods, short=self.short_window)
        req = frame["request_count"].to_numpy(dtype=float)
        base_req, scale_req = features.seasonal_traffic(f, getattr(self, "tod_profile_", None))
        z_req = ((f["log_req"] - base_req) / scale_req).to_numpy(dtype=float)

        # Error rate: robust scale of the rate itself, floored by binomial noise.
        keys = frame["service"]
        er = frame["error_rate"].where(frame["request_count"] > 0)
        _, er_scale = features.rolling_baseline(
            pd.DataFrame({"service": keys, "er": er}), "er", self.window, self.min_periods
        )
        base_err = np.maximum(
            f["base_error_rate"].fillna(features.ERROR_RATE_FLOOR), features.ERROR_RATE_FLOOR
        ).to_numpy()
        binom = np.sqrt(base_err * (1 - base_err) / np.maximum(req, 1))
        err_scale = np.maximum.reduce(
            [np.nan_to_num(er_scale.to_numpy(dtype=float), nan=0.0), binom, np.full(len(f), 0.002)]
        )
        z_err = (frame["error_rate"].to_numpy(dtype=float) - base_err) / err_scale
        z_err = np.where(req >= self.min_requests, z_err, 0.0)

        z_p95 = (f["p95_log_ratio"] / f["scale_log_p95"]).to_numpy(dtype=float)
        z_avg = (f["avg_log_ratio"] / f["scale_log_avg"]).to_numpy(dtype=float)
        z_lat = np.where(req >= 3, np.fmax(z_p95, z_avg), 0.0)
        z_short = (f["p95_short_log_ratio"] / f["scale_log_p95"]).to_numpy(dtype=float)
        step = np.abs(f.groupby(keys, sort=False)["log_p95"].diff().to_numpy(dtype=float)) / f[
            "scale_log_p95"
        ].to_numpy(dtype=float)

        no_base = ~f["has_baseline"].to_numpy()
        zs = {
            "error_surge": np.nan_to_num(z_err, nan=0.0),
            "latency": np.nan_to_num(z_lat, nan=0.0),
            "traffic_drop": np.nan_to_num(-z_req, nan=0.0),
            "traffic_surge": np.nan_to_num(z_req, nan=0.0),
        }
        t = self.z_threshold
        parts = np.vstack([ramp(z, 0.0, t, 2 * t) for z in zs.values()])
        parts[:, no_base] = 0.0
        kinds = np.array(list(zs))
        best = parts.argmax(axis=0)
        score = parts.max(axis=0)
        kind = kinds[best].astype(object)
        drift = (np.nan_to_num(z_short) >= 0.8 * t) & (np.nan_to_num(step, nan=0.0) < 3.0)
        kind[kind == "latency"] = np.where(drift[kind == "latency"], "latency_drift", "latency_spike")
        kind[score <= 0] = None

        base_ms = np.exp(f["base_log_p95"].to_numpy(dtype=float))
        base_cnt = np.expm1(base_req.to_numpy(dtype=float))
        baseline = [
            rounded({"error_rate": base_err[i], "p95_latency_ms": base_ms[i], "request_count": base_cnt[i]})
            for i in range(len(f))
        ]
        observed = [
            rounded(
                {
                    "error_rate": frame["error_rate"].iat[i],
                    "p95_latency_ms": frame["p95_latency_ms"].iat[i],
                    "request_count": req[i],
                    "z_error_rate": z_err[i],
                    "z_latency": z_lat[i],
                    "z_traffic": z_req[i],
                }
            )
            for i in range(len(f))
        ]
        return pd.DataFrame({"score": score, "anomaly_type": kind, "baseline": baseline, "observed": observed})
