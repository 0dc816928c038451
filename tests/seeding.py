"""Seed a real DuckDB store with realistic rows, for tests of the stages that read it.

Only for tests: production rows come from their owning writers (Spark, the
detector, the narrator). Deterministic given `seed`.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from observability import tables
from observability.store import Store, utcnow

DEFAULT_SERVICES = ("checkout", "payments", "search", "inventory", "database")


def metrics_frame(
    services=DEFAULT_SERVICES,
    start: datetime | None = None,
    minutes: int = 180,
    seed: int = 0,
    incident: tuple[str, int, int] | None = None,
) -> pd.DataFrame:
    """1-minute service_metrics rows with a daily curve and noise.

    `incident=(service, first_minute, last_minute)` raises that service's
    error rate and latency inside the span.
    """
    rng = np.random.default_rng(seed)
    if start is None:
        start = (utcnow() - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    rows = []
    for si, service in enumerate(services):
        base_rate = 300 + 100 * si
        base_lat = 40 + 15 * si
        for m in range(minutes):
            ws = start + timedelta(minutes=m)
            hour = ws.hour + ws.minute / 60
            daily = 1 + 0.4 * math.sin((hour - 6) / 24 * 2 * math.pi)
            req = max(1, int(rng.normal(base_rate * daily, base_rate * 0.05)))
            err_rate = abs(rng.normal(0.01, 0.003))
            lat = base_lat * (1 + rng.normal(0, 0.05))
            if incident and incident[0] == service and incident[1] <= m <= incident[2]:
                err_rate = 0.25 + rng.uniform(0, 0.1)
                lat *= 4
            errors = int(round(req * err_rate))
            rows.append(
                dict(
                    window_start=ws,
                    window_end=ws + timedelta(minutes=1),
                    service=service,
                    request_count=req,
                    error_count=errors,
                    client_error_count=int(req * 0.02),
                    error_rate=errors / req,
                    avg_latency_ms=lat,
                    p50_latency_ms=lat * 0.9,
                    p95_latency_ms=lat * 2.0,
                    p99_latency_ms=lat * 3.0,
                    max_latency_ms=lat * 5.0,
                    updated_at=ws + timedelta(minutes=1, seconds=5),
                )
            )
    return pd.DataFrame(rows)


def seed_metrics(store: Store, **kwargs) -> pd.DataFrame:
    df = metrics_frame(**kwargs)
    store.insert_df(tables.SERVICE_METRICS, df, upsert=True)
    ep = df.copy()
    ep["endpoint"] = "/api/" + ep["service"]
    store.insert_df(tables.ENDPOINT_METRICS, ep, upsert=True)
    return df


def seed_incident(
    store: Store,
    service: str,
    started_at: datetime,
    minutes: int = 5,
    *,
    severity: str = "high",
    anomaly_type: str = "error_surge",
    related: list[str] | None = None,
    root_cause: str | None = None,
    status: str = "resolved",
    trace_ids: list[str] | None = None,
) -> str:
    """One incident with one anomaly per minute; returns the incident id."""
    incident_id = str(uuid.uuid4())
    trace_ids = trace_ids or [uuid.uuid4().hex for _ in range(3)]
    now = utcnow()
    anomalies = []
    for m in range(minutes):
        ws = started_at + timedelta(minutes=m)
        anomalies.append(
            dict(
                id=str(uuid.uuid4()),
                service=service,
                window_start=ws,
                window_end=ws + timedelta(minutes=1),
                detected_at=ws + timedelta(minutes=1, seconds=20),
                anomaly_type=anomaly_type,
                severity=severity,
                score=0.9,
                detectors=json.dumps({"rules": 1.0, "robust_stats": 0.8, "isolation_forest": 0.7, "transformer": 0.6}),
                baseline=json.dumps({"error_rate": 0.01, "p95_latency_ms": 80.0, "request_count": 300}),
                observed=json.dumps({"error_rate": 0.3, "p95_latency_ms": 320.0, "request_count": 310}),
                sample_trace_ids=trace_ids,
            )
        )
    store.insert_df(tables.ANOMALIES, pd.DataFrame(anomalies))
    ended = started_at + timedelta(minutes=minutes) if status == "resolved" else None
    store.execute(
        f"""INSERT INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity,
            root_cause_service, related_services, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [incident_id, service, started_at, ended, status, severity, root_cause or service, related or [], now],
    )
    store.executemany(
        f"INSERT OR REPLACE INTO {tables.TRACE_SAMPLES} (window_start, service, trace_id, reason) VALUES (?, ?, ?, ?)",
        [[started_at, service, t, "error"] for t in trace_ids],
    )
    return incident_id
