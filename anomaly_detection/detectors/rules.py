"""Rules an SRE would write: error surge, latency over SLA, traffic drop/surge.

Each rule is a ratio against the service's own baseline with a volume gate, so
one error in a quiet minute never pages anyone. Scores are 0.5 exactly at the
rule's threshold (3x errors, 2x SLA, 40 % / 250 % traffic) and rise to 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from anomaly_detection import features
from anomaly_detection.detectors.base import BaseDetector, ramp, rounded


class RulesDetector(BaseDetector):
    name = "rules"

    def __init__(
        self,
        *,
        error_ratio: float = 3.0,
        min_requests: int = 5,
        min_errors: int = 5,
        sla_factor: float = 2.0,
        slas: dict[str, float] | None = None,
        sla_quantile: float = 0.99,
        sla_headroom: float = 1.25,
        min_latency_requests: int = 5,
        traffic_drop_ratio: float = 0.4,
        traffic_surge_ratio: float = 2.5,
        min_baseline_requests: float = 20.0,
        poisson_alpha: float = 1e-4,
        window: int = 60,
        min_periods: int = 5,
        tod_min_days: int = 2,
        seed: int = 0,
    ) -> None:
        self.error_ratio = error_ratio
        self.min_requests = min_requests
        self.min_errors = min_errors
        self.sla_factor = sla_factor
        self.slas = dict(slas or {})
        self.sla_quantile = sla_quantile
        self.sla_headroom = sla_headroom
        self.min_latency_requests = min_latency_requests
        self.traffic_drop_ratio = traffic_drop_ratio
        self.traffic_surge_ratio = traffic_surge_ratio
        self.min_baseline_requests = min_baseline_requests
        self.poisson_alpha = poisson_alpha
        self.window = window
        self.min_periods = min_periods
        self.tod_min_days = tod_min_days
        self.seed = seed  # deterministic anyway; kept for the common interface

    def _fit(self, history: pd.DataFrame) -> None:
        self.learned_slas_ = learn_slas(history, self.sla_quantile, self.sla_headroom)
        self.tod_profile_ = features.time_of_day_profile(history, self.tod_min_days)

    def sla_for(self, service: str) -> float | None:
        if service in self.slas:
            return float(self.slas[service])
        return getattr(self, "learned_slas_", {}).get(service)

    def _evaluate(self, frame: pd.DataFrame) -> pd.DataFrame:
        f = features.build(frame, window=self.window, min_periods=self.min_periods)
        req = frame["request_count"].to_numpy(dtype=float)
        errors = frame["error_count"].to_numpy(dtype=float)
        err_rate = frame["error_rate"].to_numpy(dtype=float)
        p95 = frame["p95_latency_ms"].to_numpy(dtype=float)

        # Error surge: rate over k x baseline, enough errors, and not explainable by chance
        # (the Poisson test carries the volume: 5 failures of 5 requests against a 0.5 % baseline
        # are as clear as 50 of 500). Until `min_periods` windows exist the baseline is the median
        # of the windows so far: the rules carry a service's first minutes, but a service is never
        # judged on its very first window (a service that always fails a third of its requests
        # would otherwise page the moment it is first seen).
        early = features.rolling_baseline(
            pd.DataFrame({"service": frame["service"], "er": frame["error_rate"].where(frame["request_count"] > 0)}),
            "er",
            self.window,
            1,
        )[0]
        base_err = np.maximum(
            f["base_error_rate"].fillna(early).fillna(features.ERROR_RATE_FLOOR).to_numpy(), features.ERROR_RATE_FLOOR
        )
        ratio = err_rate / base_err
        expected = base_err * req
        p_err = stats.poisson.sf(errors - 1, np.maximum(expected, 1e-9))
        seen_before = f["history_n"].to_numpy() >= 1
        err_ok = seen_before & (req >= self.min_requests) & (errors >= self.min_errors) & (p_err < self.poisson_alpha)
        s_err = ramp(ratio, 1.0, self.error_ratio, 2 * self.error_ratio)
        s_err = np.where(err_ok, s_err, np.minimum(s_err, 0.3))

        # Latency: p95 over k x SLA (configured, learned in fit, or learned from the frame).
        sla = np.array([self.sla_for(s) or np.nan for s in frame["service"]], dtype=float)
        frame_sla = np.exp(f["base_log_p95"] + 2.33 * f["scale_log_p95"]).to_numpy() * self.sla_headroom
        sla = np.where(np.isfinite(sla), sla, frame_sla)
        lat_ratio = p95 / sla
        s_lat = ramp(lat_ratio, 1.0, self.sla_factor, 2 * self.sla_factor)
        s_lat = np.where(req >= self.min_latency_requests, s_lat, np.minimum(s_lat, 0.3))

        # Traffic against the seasonal baseline, with a Poisson check on the count.
        base_log, _ = features.seasonal_traffic(f, getattr(self, "tod_profile_", None))
        expected_req = np.expm1(base_log.to_numpy(dtype=float))
        t_ratio = req / np.maximum(expected_req, 1e-9)
        vol_ok = expected_req >= self.min_baseline_requests
        lam = np.maximum(np.nan_to_num(expected_req, nan=1.0), 1e-9)
        p_low = stats.poisson.cdf(req, lam)
        p_high = stats.poisson.sf(req - 1, lam)
        s_drop = np.where(vol_ok & (p_low < self.poisson_alpha), ramp(t_ratio, 1.0, self.traffic_drop_ratio, 0.0), 0.0)
        s_surge = np.where(
            vol_ok & (p_high < self.poisson_alpha),
            ramp(t_ratio, 1.0, self.traffic_surge_ratio, 2 * self.traffic_surge_ratio),
            0.0,
        )
        no_base = ~np.isfinite(expected_req)
        s_drop[no_base] = 0.0
        s_surge[no_base] = 0.0

        parts = np.vstack([s_err, s_lat, s_drop, s_surge])
        kinds = np.array(["error_surge", "latency_spike", "traffic_drop", "traffic_surge"])
        best = parts.argmax(axis=0)
        score = parts.max(axis=0)
        rows = []
        for i in range(len(frame)):
            rows.append(
                (
                    rounded(
                        {
                            "error_rate": base_err[i],
                            "p95_latency_ms": np.exp(f["base_log_p95"].iat[i]),
                            "sla_ms": sla[i],
                            "request_count": expected_req[i],
                        }
                    ),
                    rounded(
                        {
                            "error_rate": err_rate[i],
                            "p95_latency_ms": p95[i],
                            "request_count": req[i],
                            "error_count": errors[i],
                        }
                    ),
                )
            )
        return pd.DataFrame(
            {
                "score": score,
                "anomaly_type": np.where(score > 0, kinds[best], None),
                "baseline": [r[0] for r in rows],
                "observed": [r[1] for r in rows],
            }
        )


def learn_slas(history: pd.DataFrame, quantile: float, headroom: float, min_windows: int = 30) -> dict[str, float]:
    """SLA per service = max(headroom x median p95, the `quantile` of p95) over history."""
    out: dict[str, float] = {}
    if history is None or len(history) == 0:
        return out
    h = history[(history["request_count"] > 0) & history["p95_latency_ms"].notna()]
    for service, g in h.groupby("service"):
        if len(g) >= min_windows:
            p = g["p95_latency_ms"]
            out[str(service)] = float(max(headroom * p.median(), p.quantile(quantile)))
    return out
