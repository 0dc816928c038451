"""The detector's univariate streaming mode: one series, each row scored from the rows before it.

Used for the Numenta Anomaly Benchmark and for any single metric. It asks the
question the service detectors ask of a window - "has this series ever looked
like this?" - of four views of the series, each against its own past:

- the value itself, the mean of the last `smooth` values (level shifts),
- the absolute step from the previous value (sudden jumps inside the range),
- the rolling standard deviation of the last `volatility` values (noise changes).

A view scores 0 while inside the range it has already shown and
0.5 + (excursion beyond the past range, in units of that range) once it leaves
it; the row's score is the largest. After a score reaches 0.5 the next
`suppress_share` of the rows seen so far (at least `suppress_min` rows) are
silenced: one anomaly, one alert.

Everything is causal (shift/cummax, rolling over past rows, a left-to-right
suppression pass), so scoring a whole series at once gives exactly what
row-at-a-time streaming would; a test checks it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class UnivariateStreamingDetector:
    def __init__(
        self,
        *,
        smooth: int = 10,
        volatility: int = 20,
        suppress_share: float = 0.05,
        suppress_min: int = 10,
        min_history: int = 2,
        seed: int = 0,
    ) -> None:
        self.smooth = smooth
        self.volatility = volatility
        self.suppress_share = suppress_share
        self.suppress_min = suppress_min
        self.min_history = min_history
        self.seed = seed  # deterministic; kept for the common interface

    def score_series(self, values) -> np.ndarray:
        x = pd.Series(np.asarray(values, dtype=float)).ffill().fillna(0.0)
        step = x.diff().abs().fillna(0.0)
        level = x.rolling(self.smooth, min_periods=1).mean()
        vol = x.rolling(self.volatility, min_periods=2).std().fillna(0.0)
        views = [
            _excursion(x, both=True),
            _excursion(level, both=True),
            _excursion(step, both=False),
            _excursion(vol, both=False),
        ]
        ex = np.fmax.reduce(views)
        ex[: self.min_history] = 0.0
        score = np.where(ex > 0, np.clip(0.5 + ex, 0.0, 1.0), 0.0)
        return self._suppress(score)

    def _suppress(self, score: np.ndarray) -> np.ndarray:
        out = score.copy()
        until = -1
        for i in range(len(out)):
            if i <= until:
                out[i] = 0.0
            elif out[i] >= 0.5:
                until = i + max(self.suppress_min, int(self.suppress_share * (i + 1)))
        return out


def _excursion(s: pd.Series, both: bool) -> np.ndarray:
    """How far each value lies beyond the range of all values before it, in units of that range."""
    hi, lo = s.shift(1).cummax(), s.shift(1).cummin()
    span = hi - lo
    flat = span <= 0
    span = span.where(~flat, 1.0)
    out = (s - hi) / span
    if both:
        out = np.fmax(out, (lo - s) / span)
    # A series that never moved and now does: as new as it gets.
    out = out.where(~flat, np.where((s != hi) & hi.notna(), 0.5, 0.0))
    return np.nan_to_num(np.asarray(out, dtype=float), nan=0.0)
