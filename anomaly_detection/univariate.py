"""The detector's univariate streaming mode: one series, each row scored from the rows before it.

Used for the Numenta Anomaly Benchmark and for any single metric. Two kinds of evidence:

- **Range**: "has this series ever looked like this?" asked of three views - the value,
  the mean of the last `smooth` values (level shifts) and the standard deviation of the
  last `volatility` values (noise changes). A view fires once it lies more than
  `min_excursion` of its past range beyond that range, scoring 0.5 + the excursion.
  The small dead band keeps slow drift from firing on every new extreme.
- **Pattern**: anomalies inside the usual range (a missing daily bump, a flat stretch,
  a changed rhythm) are found by how far the last `pattern` values lie from the nearest
  earlier stretch of the same length (a left matrix profile). That distance is judged
  against its own recent history the way HTM's anomaly likelihood judges a raw score: a
  Gaussian tail probability over the last `history` distances, log-scaled so that a
  tail of 1e-5 scores 0.5 and 1e-10 scores 1. The pattern view runs at several `scales`:
  at scale k the pattern is the last `pattern` means of k rows, compared with same-phase
  patterns before it, so slow shape changes (a missing daily bump) stand out too.

The row's score is the largest of the views. After a score reaches 0.5 the next
`suppress_share` of the rows seen so far (at least `suppress_min` rows) are silenced:
NAB counts only the first detection in a window and charges every false positive.

Everything is causal (expanding/rolling statistics of earlier rows, a nearest-neighbour
search over earlier subsequences only, a left-to-right suppression pass), so scoring a
whole series at once gives exactly what row-at-a-time streaming would; a test checks it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import log_ndtr

LOG_TAIL_AT_ONE = np.log(1e-10)  # a tail probability this small scores 1.0 (NuPIC's log scale)


class UnivariateStreamingDetector:
    def __init__(
        self,
        *,
        smooth: int = 10,
        volatility: int = 20,
        min_excursion: float = 0.05,
        pattern: int = 8,
        scales: tuple[int, ...] = (1, 16, 32, 64),
        history: int = 4000,
        warmup: int = 150,
        suppress_share: float = 0.05,
        suppress_min: int = 10,
        min_history: int = 2,
        seed: int = 0,
    ) -> None:
        self.smooth = smooth
        self.volatility = volatility
        self.min_excursion = min_excursion
        self.pattern = pattern
        self.scales = tuple(scales)
        self.history = history
        self.warmup = warmup
        self.suppress_share = suppress_share
        self.suppress_min = suppress_min
        self.min_history = min_history
        self.seed = seed  # deterministic; kept for the common interface

    def score_series(self, values) -> np.ndarray:
        x = pd.Series(np.asarray(values, dtype=float)).ffill().fillna(0.0)
        views = [self._range_score(x)] + [self._pattern_score(x.to_numpy(), k) for k in self.scales]
        score = np.maximum.reduce(views)
        return self._suppress(score)

    def _range_score(self, x: pd.Series) -> np.ndarray:
        """0.5 + excursion beyond the past range of any view, once past the dead band; else 0."""
        level = x.rolling(self.smooth, min_periods=1).mean()
        vol = x.rolling(self.volatility, min_periods=2).std().fillna(0.0)
        ex = np.fmax.reduce([_excursion(x, both=True), _excursion(level, both=True), _excursion(vol, both=False)])
        ex[: self.min_history] = 0.0
        return np.where(ex > self.min_excursion, np.clip(0.5 + ex, 0.0, 1.0), 0.0)

    def _pattern_score(self, x: np.ndarray, scale: int = 1) -> np.ndarray:
        """Log tail probability of the nearest-earlier-neighbour distance against its recent history."""
        d = pd.Series(dilated_neighbour_distance(x, self.pattern, scale))
        d[: self.warmup] = np.nan
        past = d.shift(1).rolling(self.history, min_periods=self.warmup)
        z = ((d - past.mean()) / past.std()).to_numpy()
        z = np.nan_to_num(z, nan=-np.inf, posinf=np.inf, neginf=-np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.clip(log_ndtr(-z) / LOG_TAIL_AT_ONE, 0.0, 1.0)
        return np.nan_to_num(score, nan=0.0)

    def _suppress(self, score: np.ndarray) -> np.ndarray:
        out = score.copy()
        until = -1
        for i in range(len(out)):
            if i <= until:
                out[i] = 0.0
            elif out[i] >= 0.5:
                until = i + max(self.suppress_min, int(self.suppress_share * (i + 1)))
        return out


def dilated_neighbour_distance(x: np.ndarray, m: int, scale: int) -> np.ndarray:
    """`left_neighbour_distance` of the last m means of `scale` rows (spanning m * scale rows).

    Row t's pattern is the mean of rows t-scale+1..t, the mean of the `scale` rows before
    those, and so on; it is compared with the same patterns ending at earlier rows of the
    same phase (t - j * scale), so one coarse pass per phase covers every row causally.
    """
    x = np.asarray(x, dtype=float)
    if scale <= 1:
        return left_neighbour_distance(x, m)
    means = pd.Series(x).rolling(scale, min_periods=1).mean().to_numpy()
    out = np.full(len(x), np.nan)
    for phase in range(scale):
        out[phase::scale] = left_neighbour_distance(means[phase::scale], m)
    return out


def left_neighbour_distance(x: np.ndarray, m: int, refresh: int = 512) -> np.ndarray:
    """Euclidean distance from the m values ending at row t to the closest m values ending at or before t - m.

    NaN until such an earlier, non-overlapping stretch exists. The sliding dot products are
    updated row by row (STOMP's recurrence: O(n) numpy work per row) and recomputed exactly
    every `refresh` rows so rounding cannot accumulate; values are shifted by the first
    value (distances are shift-invariant) to keep the squares small.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    out = np.full(n, np.nan)
    if n < 2 * m + 1:
        return out
    x = x - x[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, m)  # windows[i] ends at row i + m - 1
    squares = np.einsum("ij,ij->i", windows, windows)
    count = len(windows)
    dots = None
    for i in range(m, count):
        if dots is None or i % refresh == 0:
            dots = windows @ windows[i]
        else:
            dots[1:] = dots[:-1] + x[i + m - 1] * x[m:] - x[i - 1] * x[: count - 1]
            dots[0] = windows[0] @ windows[i]
        d2 = squares[: i - m + 1] + squares[i] - 2.0 * dots[: i - m + 1]
        out[i + m - 1] = np.sqrt(max(float(d2.min()), 0.0))
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
