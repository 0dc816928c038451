"""The one interface every detector implements (in the style of PyOD/River).

- The constructor takes hyperparameters only (and an explicit `seed`).
- `fit(history)` learns from past `service_metrics` rows; fitted state ends in `_`.
- `score(windows)` returns one float per row, higher = more anomalous, calibrated
  to [0, 1] so that 0.5 is the detector's own decision boundary.
- `explain(window)` returns the figures behind one row's score.

Detectors compare each window with its own service's past (`features.py`), so a
service never seen in `fit` is scored against the windows before it in the frame.
Rows with no data (no requests, NaN values) score 0: no evidence, no alarm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from anomaly_detection import features

RESULT_COLUMNS = ("score", "anomaly_type", "baseline", "observed")


def ramp(x, neutral: float, half: float, full: float) -> np.ndarray:
    """Piecewise-linear calibration: `neutral`->0, `half`->0.5, `full`->1 (either direction)."""
    x = np.asarray(x, dtype=float)
    if half < neutral:  # decreasing quantities (traffic drop)
        x, neutral, half, full = -x, -neutral, -half, -full
    low = 0.5 * (x - neutral) / (half - neutral)
    high = 0.5 + 0.5 * (x - half) / (full - half)
    out = np.where(x < half, low, high)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)


class BaseDetector(ABC):
    """Fit on history, score windows, explain a score."""

    name: ClassVar[str] = "base"
    #: Rows of history kept per service as context for causal baselines.
    context_windows: int = 240

    def fit(self, history: pd.DataFrame) -> BaseDetector:
        history = features.clean(history) if history is not None and len(history) else _empty()
        self.history_ = history.groupby("service", sort=False).tail(self.context_windows).reset_index(drop=True)
        self.services_ = sorted(history["service"].unique().tolist())
        self._fit(history)
        self.is_fitted_ = True
        return self

    def set_context(self, history: pd.DataFrame) -> BaseDetector:
        """Refresh the recent windows used as baseline context, without re-learning.

        Used for a model loaded from the registry: its learned state stays, its
        context follows the data it is about to score.
        """
        history = features.clean(history) if history is not None and len(history) else _empty()
        self.history_ = history.groupby("service", sort=False).tail(self.context_windows).reset_index(drop=True)
        return self

    def _fit(self, history: pd.DataFrame) -> None:  # pragma: no cover  # noqa: B027 - optional hook, a no-op by default
        pass

    def score(self, windows: pd.DataFrame) -> np.ndarray:
        return self.evaluate(windows)["score"].to_numpy(dtype=float)

    def evaluate(self, windows: pd.DataFrame) -> pd.DataFrame:
        """Score plus anomaly type, baseline and observed figures, one row per input row."""
        if windows is None or len(windows) == 0:
            return pd.DataFrame(columns=list(RESULT_COLUMNS))
        frame, where = features.with_context(getattr(self, "history_", None), windows)
        result = self._evaluate(frame)
        has_data = (frame["request_count"] > 0).to_numpy()
        result.loc[~has_data, "score"] = 0.0
        result["score"] = np.clip(np.nan_to_num(result["score"].to_numpy(dtype=float), nan=0.0), 0.0, 1.0)
        return result.iloc[where].reset_index(drop=True)

    @abstractmethod
    def _evaluate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Result columns for every row of the context frame."""

    def explain(self, window: Any) -> dict:
        """The figures behind one window's score (a 1-row frame, a Series or a dict)."""
        if isinstance(window, pd.Series):
            window = window.to_frame().T
        elif isinstance(window, dict):
            window = pd.DataFrame([window])
        row = self.evaluate(window.iloc[:1]).iloc[0]
        return {
            "detector": self.name,
            "score": float(row["score"]),
            "anomaly_type": row["anomaly_type"],
            "baseline": row["baseline"],
            "observed": row["observed"],
        }

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _empty() -> pd.DataFrame:
    return features.clean(
        pd.DataFrame({"service": pd.Series(dtype=str), "window_start": pd.Series(dtype="datetime64[ns]")})
    )


def rounded(d: dict) -> dict:
    """JSON-friendly figures (NaN -> None)."""
    out = {}
    for k, v in d.items():
        if v is None:
            out[k] = None
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            out[k] = v
            continue
        out[k] = None if not np.isfinite(f) else round(f, 4)
    return out
