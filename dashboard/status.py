"""Pure derivations for the dashboard: service status, pipeline lag, JSON cells.

Kept apart from rendering so the rules are easy to read and to test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

HEALTHY, DEGRADED, INCIDENT = "healthy", "degraded", "incident"
STATUS_ORDER = {INCIDENT: 0, DEGRADED: 1, HEALTHY: 2}
SEVERITY_ORDER = ("low", "medium", "high", "critical")
SEVERITY_COLORS = {"low": "#8ab4f8", "medium": "#f9c74f", "high": "#f3722c", "critical": "#d62828"}
# Pipeline lag above these is shown as a warning / an error.
LAG_WARN = timedelta(minutes=3)
LAG_ERROR = timedelta(minutes=10)


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    status: str
    reason: str
    last_window: datetime | None = None
    request_rate: float | None = None
    error_rate: float | None = None
    p95_latency_ms: float | None = None


def as_list(value: Any) -> list:
    """A DuckDB LIST cell (list, numpy array or NULL) as a Python list."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, float) and np.isnan(value):
        return []
    return [value]


def as_dict(value: Any) -> dict:
    """A JSON cell (text, dict or NULL) as a dict; unparseable text as {}."""
    if isinstance(value, dict):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _num(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def service_statuses(
    snapshot: pd.DataFrame, open_incidents: pd.DataFrame, recent_anomalies: pd.DataFrame
) -> list[ServiceStatus]:
    """Status per service, worst first.

    incident: the service of an open incident, or its likely root cause.
    degraded: anomalies in the last few minutes, or named as related to an
              open incident.
    healthy:  otherwise.
    Services come from the data only (metrics, open incidents, anomalies), so
    a service the dashboard has never seen gets a tile like any other.
    """
    reasons: dict[str, tuple[str, str]] = {}

    def mark(service: str, status: str, reason: str) -> None:
        if not service:
            return
        current = reasons.get(service)
        if current is None or STATUS_ORDER[status] < STATUS_ORDER[current[0]]:
            reasons[service] = (status, reason)

    for row in recent_anomalies.itertuples(index=False):
        mark(row.service, DEGRADED, f"{int(row.anomalies)} anomalies in the last 15 min")
    for row in open_incidents.itertuples(index=False):
        for related in as_list(row.related_services):
            mark(related, DEGRADED, f"related to the open incident on {row.service}")
        mark(row.service, INCIDENT, f"open {row.peak_severity} incident since {row.started_at:%H:%M} UTC")
        if row.root_cause_service and row.root_cause_service != row.service:
            mark(row.root_cause_service, INCIDENT, f"likely root cause of the incident on {row.service}")

    figures = {row.service: row for row in snapshot.itertuples(index=False)}
    services = sorted(set(figures) | set(reasons))
    out = []
    for service in services:
        status, reason = reasons.get(service, (HEALTHY, "no recent anomalies"))
        row = figures.get(service)
        out.append(
            ServiceStatus(
                service=service,
                status=status,
                reason=reason,
                last_window=None if row is None else row.last_window,
                request_rate=None if row is None else _num(row.request_rate),
                error_rate=None if row is None else _num(row.error_rate),
                p95_latency_ms=None if row is None else _num(row.p95_latency_ms),
            )
        )
    return sorted(out, key=lambda s: (STATUS_ORDER[s.status], s.service))


def pipeline_lag(max_event_time: Any, now: datetime) -> timedelta | None:
    """How far the newest event the stream has seen is behind now (None: no data yet)."""
    if max_event_time is None or pd.isna(max_event_time):
        return None
    return now - pd.Timestamp(max_event_time).to_pydatetime()


def lag_level(lag: timedelta | None) -> str:
    if lag is None:
        return "unknown"
    if lag >= LAG_ERROR:
        return "error"
    if lag >= LAG_WARN:
        return "warning"
    return "ok"


def format_duration(delta: timedelta | None) -> str:
    if delta is None:
        return "n/a"
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{sign}{seconds} s"
    if seconds < 2 * 3600:
        return f"{sign}{seconds // 60} min {seconds % 60} s"
    if seconds < 2 * 86400:
        return f"{sign}{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{sign}{seconds // 86400} d {seconds % 86400 // 3600} h"


def severity_rank(severity: str) -> int:
    """Known severities in order; anything unknown sorts after them."""
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def detector_scores(anomalies: pd.DataFrame) -> pd.DataFrame:
    """Max and mean score of each detector over an incident's anomalies."""
    rows = [
        {"detector": name, "score": float(score)}
        for cell in anomalies.get("detectors", pd.Series(dtype=object))
        for name, score in as_dict(cell).items()
        if isinstance(score, (int, float))
    ]
    if not rows:
        return pd.DataFrame(columns=["detector", "max_score", "mean_score"])
    df = pd.DataFrame(rows).groupby("detector")["score"].agg(max_score="max", mean_score="mean").reset_index()
    return df.sort_values("max_score", ascending=False, ignore_index=True)


def baseline_vs_observed(anomaly_row: Any) -> pd.DataFrame:
    """Baseline, observed and their ratio per metric of one anomaly."""
    baseline, observed = as_dict(anomaly_row.baseline), as_dict(anomaly_row.observed)
    rows = []
    for metric in sorted(set(baseline) | set(observed)):
        b, o = baseline.get(metric), observed.get(metric)
        ratio = o / b if isinstance(b, (int, float)) and isinstance(o, (int, float)) and b else None
        rows.append({"metric": metric, "baseline": b, "observed": o, "observed / baseline": ratio})
    return pd.DataFrame(rows, columns=["metric", "baseline", "observed", "observed / baseline"])
