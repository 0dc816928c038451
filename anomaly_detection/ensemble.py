"""The ensemble: detectors' calibrated scores -> one score, a verdict, a severity, a type.

The combined score is the largest weighted detector score (a noisy-OR would add
up four detectors' noise). The anomaly type is the one named by the detector
that carried the verdict; when only the learned models see something, the type
is `multivariate`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomaly_detection import thresholds
from anomaly_detection.detectors import BaseDetector

TYPED_DETECTORS = ("rules", "robust_stats")


class Ensemble:
    def __init__(self, detectors: dict[str, BaseDetector], weights: dict[str, float] | None = None) -> None:
        self.detectors = detectors
        self.weights = dict(thresholds.WEIGHTS if weights is None else weights)

    def fit(self, history: pd.DataFrame, only: tuple[str, ...] | None = None) -> Ensemble:
        for name, det in self.detectors.items():
            if only is None or name in only:
                det.fit(history)
        return self

    def evaluate(self, windows: pd.DataFrame) -> pd.DataFrame:
        """One row per window: score, is_anomaly, severity, anomaly_type, detectors, baseline, observed."""
        n = len(windows)
        cols = ["score", "is_anomaly", "severity", "anomaly_type", "detectors", "baseline", "observed"]
        if n == 0:
            return pd.DataFrame(columns=cols)
        results = {name: det.evaluate(windows) for name, det in self.detectors.items()}
        names = list(results)
        raw = np.vstack([results[k]["score"].to_numpy(dtype=float) for k in names])
        weighted = raw * np.array([self.weights.get(k, 1.0) for k in names])[:, None]
        score = np.clip(weighted.max(axis=0), 0.0, 1.0)
        top = weighted.argmax(axis=0)
        typed = [i for i, k in enumerate(names) if k in TYPED_DETECTORS]
        rows = []
        for j in range(n):
            lead = names[top[j]]
            kind = results[lead]["anomaly_type"].iat[j]
            if lead not in TYPED_DETECTORS:
                # A model carried it: keep a rule/statistic's type if one is close to its boundary.
                best_typed = max(typed, key=lambda i: weighted[i, j]) if typed else None
                if best_typed is not None and weighted[best_typed, j] >= 0.4:
                    kind = results[names[best_typed]]["anomaly_type"].iat[j]
                else:
                    kind = "multivariate"
            source = (
                lead
                if lead in TYPED_DETECTORS
                else (names[max(typed, key=lambda i: weighted[i, j])] if typed else lead)
            )
            s = float(score[j])
            rows.append(
                {
                    "score": round(s, 4),
                    "is_anomaly": thresholds.is_anomaly(s),
                    "severity": thresholds.severity(s),
                    "anomaly_type": kind or "multivariate",
                    "detectors": {k: round(float(raw[i, j]), 4) for i, k in enumerate(names)},
                    "baseline": results[source]["baseline"].iat[j],
                    "observed": results[source]["observed"].iat[j],
                }
            )
        return pd.DataFrame(rows, columns=cols)
