"""The detector's univariate streaming mode: one series, each row scored from the rows before it.

Used for the Numenta Anomaly Benchmark and for any single metric. The steps
mirror the service detectors' robust statistics, then add NAB-style anomaly
likelihood so scores are comparable across very different series:

1. deviation: |x - rolling median| / robust scale of the previous `window` rows
   (the scale never collapses to zero on flat series), at two speeds - the row
   itself and the mean of the last `short` rows (level shifts);
2. likelihood: how unusual the recent average deviation is against the
   distribution of deviations over the previous `likelihood_window` rows
   (Gaussian tail, as in Numenta's anomaly likelihood), reported on a log scale
   so 0.5 ~ 1e-5 tail probability;
3. suppression: after a score crosses `suppress_level`, the next
   `suppress_rows` rows are damped (one anomaly, one alert).

Everything is causal (shift-then-roll), so scoring a whole series at once gives
exactly what row-at-a-time streaming would; a test checks it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr


class UnivariateStreamingDetector:
    def __init__(
        self,
        *,
        window: int = 400,
        min_periods: int = 30,
        short: int = 5,
        likelihood_window: int = 500,
        likelihood_short: int = 5,
        suppress_level: float = 0.6,
        suppress_rows: int = 0,
        seed: int = 0,
    ) -> None:
        self.window = window
        self.min_periods = min_periods
        self.short = short
        self.likelihood_window = likelihood_window
        self.likelihood_short = likelihood_short
        self.suppress_level = suppress_level
        self.suppress_rows = suppress_rows
        self.seed = seed

    def deviation(self, values) -> np.ndarray:
        x = pd.Series(np.asarray(values, dtype=float)).ffill().fillna(0.0)
        past = x.shift(1).rolling(self.window, min_periods=self.min_periods)
        med = past.median()
        iqr = past.quantile(0.75) - past.quantile(0.25)
        spread = past.max() - past.min()
        scale = np.maximum.reduce(
            [iqr.to_numpy() / 1.349, 0.02 * spread.to_numpy(), 1e-3 * (np.abs(med.to_numpy()) + 1e-3)]
        )
        z1 = np.abs(x.to_numpy() - med.to_numpy()) / scale
        zs = np.abs(x.rolling(self.short, min_periods=1).mean().to_numpy() - med.to_numpy()) / scale * np.sqrt(self.short)
        z = np.fmax(z1, zs / 2.0)
        return np.nan_to_num(z, nan=0.0)

    def score_series(self, values) -> np.ndarray:
        z = pd.Series(np.log1p(self.deviation(values)))
        hist = z.shift(self.likelihood_short).rolling(self.likelihood_window, min_periods=self.min_periods)
        mu, sd = hist.mean(), hist.std().clip(lower=1e-3)
        recent = z.rolling(self.likelihood_short, min_periods=1).mean()
        tail = 1.0 - ndtr(((recent - mu) / sd).to_numpy())
        score = np.log(np.clip(tail, 1e-300, 1.0) + 1e-10) / np.log(1e-10)
        score = np.clip(np.nan_to_num(score, nan=0.0), 0.0, 1.0)
        if self.suppress_rows > 0:
            score = _suppress(score, self.suppress_level, self.suppress_rows)
        return score


def _suppress(score: np.ndarray, level: float, rows: int) -> np.ndarray:
    out = score.copy()
    until = -1
    for i in range(len(out)):
        if i <= until:
            out[i] *= 0.5
        elif out[i] >= level:
            until = i + rows
    return out
