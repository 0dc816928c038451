"""Isolation Forest (scikit-learn) over each service's multivariate window features.

One forest for every service: its inputs are service-normalised (traffic,
latency and error figures relative to the service's own baseline), so it
transfers to services it has never seen. The raw isolation score is
calibrated on the training windows: 0.5 at the `calibration_quantile` of the
training scores, 1 at twice that distance above the median.
"""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from anomaly_detection import features
from anomaly_detection.detectors.base import BaseDetector, ramp, rounded

_TYPE_OF_FEATURE = {
    "req_log_ratio": "traffic",
    "err_excess_z": "error_surge",
    "p95_log_ratio": "latency_spike",
    "avg_log_ratio": "latency_spike",
    "p99_log_ratio": "latency_spike",
    "p95_short_log_ratio": "latency_drift",
}


class IsolationForestDetector(BaseDetector):
    name = "isolation_forest"

    def __init__(
        self,
        *,
        n_estimators: int = 150,
        max_samples: int = 256,
        calibration_quantile: float = 0.99,
        min_train_windows: int = 240,
        window: int = 60,
        min_periods: int = 10,
        seed: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.calibration_quantile = calibration_quantile
        self.min_train_windows = min_train_windows
        self.window = window
        self.min_periods = min_periods
        self.seed = seed

    def _train_matrix(self, history: pd.DataFrame) -> np.ndarray:
        if history.empty:
            return np.empty((0, len(features.MODEL_FEATURES)))
        f = features.build(history, window=self.window, min_periods=self.min_periods)
        ok = f["has_baseline"].to_numpy() & (history["request_count"] > 0).to_numpy()
        return features.model_matrix(f[ok])

    def _fit(self, history: pd.DataFrame) -> None:
        x = self._train_matrix(history)
        self.n_train_ = int(len(x))
        self.ready_ = self.n_train_ >= self.min_train_windows
        if not self.ready_:
            self.model_ = None
            return
        # Features in units of their own training spread, plus their L-inf and L2
        # norms: an axis-parallel forest then isolates a window that is extreme in
        # any one feature in a split or two.
        self.input_scale_ = np.maximum(np.quantile(np.abs(x), 0.9, axis=0), 0.02).tolist()
        z = self._inputs(x)
        self.model_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(z)), random_state=self.seed
        ).fit(z)
        raw = -self.model_.score_samples(z)
        self.center_ = float(np.median(raw))
        self.edge_ = float(max(np.quantile(raw, self.calibration_quantile), self.center_ + 1e-6))
        # Per-feature spread for explanations.
        self.feature_scale_ = np.maximum(np.quantile(np.abs(x), 0.99, axis=0), 1e-3).tolist()

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        z = x / np.asarray(self.input_scale_)
        return np.hstack([z, np.abs(z).max(axis=1, keepdims=True), np.sqrt((z**2).mean(axis=1, keepdims=True))])

    def _evaluate(self, frame: pd.DataFrame) -> pd.DataFrame:
        f = features.build(frame, window=self.window, min_periods=self.min_periods)
        x = features.model_matrix(f)
        n = len(f)
        if not getattr(self, "ready_", False):
            return pd.DataFrame(
                {"score": np.zeros(n), "anomaly_type": [None] * n, "baseline": [{}] * n, "observed": [{}] * n}
            )
        raw = -self.model_.score_samples(self._inputs(x))
        score = ramp(raw, self.center_, self.edge_, 2 * self.edge_ - self.center_)
        score[~f["has_baseline"].to_numpy()] = 0.0
        return _result(score, x, np.asarray(self.feature_scale_))

    # -- persistence -------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path / "model.joblib")
        (path / "params.json").write_text(json.dumps(self.get_params(), indent=2))

    @classmethod
    def load(cls, path: Path) -> IsolationForestDetector:
        model = joblib.load(Path(path) / "model.joblib")
        if not isinstance(model, cls):
            raise TypeError(f"{path} does not hold an {cls.__name__}")
        return model


def _result(score: np.ndarray, x: np.ndarray, scale: np.ndarray, names=features.MODEL_FEATURES) -> pd.DataFrame:
    """Type and figures from the features that deviate most (shared by the model detectors)."""
    names = list(names)
    rel = np.abs(x) / scale
    top = rel.argmax(axis=1) if len(x) else np.array([], dtype=int)
    kinds, observed = [], []
    for i in range(len(x)):
        name = names[top[i]]
        kind = _TYPE_OF_FEATURE[name]
        if kind == "traffic":
            kind = "traffic_surge" if x[i, top[i]] > 0 else "traffic_drop"
        kinds.append(kind if score[i] > 0 else None)
        observed.append(rounded(dict(zip(names, x[i], strict=True))))
    return pd.DataFrame(
        {"score": score, "anomaly_type": kinds, "baseline": [{n: 0.0 for n in names}] * len(x), "observed": observed}
    )
