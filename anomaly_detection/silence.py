"""Silence: a service that stops sending makes no window at all, so no detector sees it.

Every final minute without a window of a service the detector knows is judged
against that service's recent traffic (the `SILENCE_LOOKBACK_MINUTES` before its
last window). k silent minutes in a row have probability

    P(k) = max(exp(-rate * k), q ** k)

where `rate` is its mean requests per minute (Poisson arrivals) and `q` the share
of minutes it was silent in the lookback (Laplace-smoothed: (empty + 1) /
(minutes + 2)). The larger of the two keeps bursty or sparse services (a batch
job every half hour, a service seen for one minute) from paging on gaps they
always have. Once P(k) < `SILENCE_P_MAX`, each further silent minute is a
`traffic_drop` anomaly (detector `silence`), scored from 0.5 at the threshold up
to 1.0 five decades lower, so a borderline minute is `low` (two in a row open an
incident) and a steady service's outage reaches `critical` within minutes.

A service silent for longer than the detector's history (`HISTORY_HOURS` in
service.py) has no lookback left and is no longer judged: it has gone.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from anomaly_detection import thresholds

WINDOW = timedelta(minutes=1)  # the Spark job's tumbling window
DETECTOR = "silence"
COLUMNS = [
    "service",
    "window_start",
    "window_end",
    "score",
    "is_anomaly",
    "severity",
    "anomaly_type",
    "detectors",
    "baseline",
    "observed",
]


def silence_probability(rate: float, empty_share: float, k: int) -> float:
    """P(k silent minutes in a row) for a service with `rate` req/min and this share of empty minutes."""
    return max(math.exp(-rate * k), empty_share**k)


def silence_score(p: float) -> float:
    """0.5 at `SILENCE_P_MAX`, +0.1 per decade below it, at most 1.0."""
    decades = math.log10(thresholds.SILENCE_P_MAX) - math.log10(max(p, 1e-300))
    return round(min(1.0, 0.5 + 0.1 * decades), 4)


def _baseline(starts: np.ndarray, counts: np.ndarray, last: int, lookback: timedelta) -> tuple[float, float]:
    """(requests per minute, smoothed share of empty minutes) over the lookback ending at window `last`."""
    end = starts[last] + np.timedelta64(WINDOW)
    lo = max(end - np.timedelta64(lookback), starts[0])
    inside = (starts >= lo) & (starts <= starts[last])
    minutes = max(1, int((end - lo) // np.timedelta64(WINDOW)))
    present = int(inside.sum())
    return float(counts[inside].sum()) / minutes, (minutes - present + 1) / (minutes + 2)


def silent_windows(
    history: pd.DataFrame,
    windows: pd.DataFrame,
    marks: dict[str, datetime],
    through: datetime,
    lookback: timedelta | None = None,
) -> pd.DataFrame:
    """The silent minutes of this chunk that are anomalies, as scored rows (COLUMNS).

    history: metrics before the chunk; windows: the chunk's windows; marks: each
    known service's last minute already judged (its detector_progress mark);
    through: every final minute ending at or before it is judged now.
    """
    lookback = lookback or timedelta(minutes=thresholds.SILENCE_LOOKBACK_MINUTES)
    seen = pd.concat(
        [history[["service", "window_start", "request_count"]], windows[["service", "window_start", "request_count"]]]
    )
    seen = seen.assign(window_start=pd.to_datetime(seen["window_start"])).drop_duplicates(
        ["service", "window_start"], keep="last"
    )
    horizon = np.datetime64(pd.Timestamp(through))
    rows = []
    for service, g in seen.sort_values("window_start").groupby("service"):
        starts = g["window_start"].to_numpy(dtype="datetime64[ns]")
        counts = g["request_count"].fillna(0).to_numpy(dtype=float)
        mark = marks.get(service)
        first = np.datetime64(pd.Timestamp(mark)) + np.timedelta64(WINDOW) if mark is not None else starts[0]
        cache: dict[int, tuple[float, float]] = {}
        t = max(np.datetime64(first, "ns"), starts[0])
        present = set(starts.astype(np.int64).tolist())
        while t + np.timedelta64(WINDOW) <= horizon:
            if int(t.astype(np.int64)) not in present:
                last = int(np.searchsorted(starts, t, side="left")) - 1
                if last >= 0:
                    if last not in cache:
                        cache[last] = _baseline(starts, counts, last, lookback)
                    rate, empty = cache[last]
                    k = int((t - starts[last]) // np.timedelta64(WINDOW))
                    p = silence_probability(rate, empty, k)
                    if p < thresholds.SILENCE_P_MAX:
                        rows.append(_row(service, pd.Timestamp(t).to_pydatetime(), p, rate, k))
            t = t + np.timedelta64(WINDOW)
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(service: str, start: datetime, p: float, rate: float, k: int) -> dict:
    score = silence_score(p)
    return {
        "service": service,
        "window_start": start,
        "window_end": start + WINDOW,
        "score": score,
        "is_anomaly": True,
        "severity": thresholds.severity(score),
        "anomaly_type": "traffic_drop",
        "detectors": {DETECTOR: score},
        "baseline": {"request_count": round(rate, 2)},
        "observed": {"request_count": 0, "silent_minutes": k, "p_silence": float(f"{p:.3g}")},
    }
