"""Decisions, kept apart from scoring: what counts as an anomaly and how severe it is.

Every detector is calibrated so 0.5 is its own decision boundary; the ensemble
weights them (`WEIGHTS`) and one threshold applies to the combined score.
The learned models weigh less than 1, so on their own they raise an anomaly
only when well past their boundary; rules and statistics speak at face value.
"""

from __future__ import annotations

ANOMALY_THRESHOLD = 0.5

WEIGHTS = {
    "rules": 1.0,
    "robust_stats": 1.0,
    "isolation_forest": 0.6,
    "transformer": 0.8,
}

# score >= cut -> severity (checked from the top)
SEVERITY_CUTS = (
    (0.95, "critical"),
    (0.8, "high"),
    (0.65, "medium"),
    (0.0, "low"),
)
SEVERITY_ORDER = {"low": 0, "medium": 1, "high": 2, "critical": 3}

# A lone anomalous window below this severity opens no incident (two in a row do).
INCIDENT_MIN_SEVERITY = "medium"

# An incident resolves after this many consecutive final windows without an anomaly.
QUIET_WINDOWS_TO_RESOLVE = 5

# A run of silent minutes (no window at all) is a traffic_drop anomaly once its
# probability under the service's recent traffic falls below this (silence.py).
SILENCE_P_MAX = 1e-5
# The traffic a silence is judged against: this many minutes before the service's last window.
SILENCE_LOOKBACK_MINUTES = 360


def is_anomaly(score: float) -> bool:
    return score >= ANOMALY_THRESHOLD


def severity(score: float) -> str:
    for cut, name in SEVERITY_CUTS:
        if score >= cut:
            return name
    return "low"


def max_severity(a: str | None, b: str | None) -> str:
    if a is None:
        return b or "low"
    if b is None:
        return a
    return a if SEVERITY_ORDER.get(a, 0) >= SEVERITY_ORDER.get(b, 0) else b
