"""Seed a DATA_DIR with everything the dashboard shows (tests only).

Real rows in a real DuckDB file and real bronze Parquet, built with the shared
seeding helpers plus the tables they do not cover. One service name is one
the dashboard code has never heard of, to prove nothing is hard-coded.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from observability import bronze, tables
from observability.store import Store, utcnow
from tests.seeding import seed_incident, seed_metrics

# the browser the dashboard tests and bench/bench_dashboard.py drive (Debian's, installed by .ci/run)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

NOVEL_SERVICE = "zz-quantum-ledger"
SERVICES = ("checkout", "payments", "search", "inventory", "database", NOVEL_SERVICE)
TEMPLATE_SUMMARY = (
    "Template summary for payments: error rate rose from 1.0% to 30.0% starting at the incident start; "
    "likely root cause database; related services: checkout."
)
LLM_SUMMARY = "Search latency spiked to four times its baseline for five minutes, then recovered without intervention."


def time_series_payloads(at) -> list[dict]:
    """The overview's time-series panels as an AppTest run sent them to the browser
    (the data of dashboard/time_series.py's component, decoded)."""
    from dashboard.time_series import COMPONENT_NAME

    return [json.loads(el.proto.json) for el in at.get("bidi_component") if el.proto.component_name == COMPONENT_NAME]


def panel_points(payload: dict, panel: str) -> dict[str, int]:
    """service -> how many buckets of `panel` hold a value (null: no window in that bucket)."""
    values = next(p["values"] for p in payload["panels"] if p["id"] == panel)
    return {s["name"]: sum(v is not None for v in vs) for s, vs in zip(payload["services"], values, strict=True)}


@dataclass
class SeededDashboard:
    now: datetime
    open_incident: str
    resolved_incident: str
    trace_id: str
    trace_ids: list[str]
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    error_logs: dict[str, str] = field(default_factory=dict)  # body -> why the open incident shows it


def _summary_row(
    incident_id: str, service: str, summary: str, generated_by: str, facts: dict, model: str | None
) -> dict:
    return dict(
        id=str(uuid.uuid4()),
        incident_id=incident_id,
        service=service,
        created_at=utcnow(),
        summary=summary,
        generated_by=generated_by,
        model=model,
        latency_ms=1234.0 if generated_by == "llm" else 2.0,
        prompt_tokens=400 if generated_by == "llm" else None,
        completion_tokens=80 if generated_by == "llm" else None,
        facts=json.dumps(facts),
    )


def _trace_spans(trace_id: str, start: datetime) -> pd.DataFrame:
    """checkout -> payments (500) -> database, plus a sibling call to inventory."""
    spans = [
        ("a" * 16, None, "checkout", "/api/checkout", 0, 420.0, 500, "upstream payments failed"),
        ("b" * 16, "a" * 16, "payments", "/api/pay", 15, 380.0, 500, "database timeout"),
        ("c" * 16, "b" * 16, "database", "SELECT orders", 25, 350.0, 500, "lock wait timeout"),
        ("d" * 16, "a" * 16, "inventory", "/api/reserve", 5, 8.0, 200, None),
    ]
    return pd.DataFrame(
        [
            dict(
                event_id=uuid.uuid4().hex,
                timestamp=start + timedelta(milliseconds=offset),
                service=service,
                endpoint=endpoint,
                status_code=status,
                latency_ms=latency,
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=parent,
                error_message=error,
                attributes=None,
            )
            for span_id, parent, service, endpoint, offset, latency, status, error in spans
        ]
    )


def seed_dashboard(store: Store, bronze_dir) -> SeededDashboard:
    now = utcnow().replace(second=0, microsecond=0)
    minutes = 180
    start = now - timedelta(minutes=minutes)
    seed_metrics(store, services=SERVICES, start=start, minutes=minutes, incident=("payments", 168, 179))

    trace_ids = [uuid.uuid4().hex for _ in range(3)]
    open_started = start + timedelta(minutes=170)
    open_id = seed_incident(
        store,
        "payments",
        open_started,
        minutes=8,
        severity="critical",
        anomaly_type="error_surge",
        related=["checkout"],
        root_cause="database",
        status="open",
        trace_ids=trace_ids,
    )
    resolved_id = seed_incident(
        store,
        "search",
        start + timedelta(minutes=60),
        minutes=5,
        severity="medium",
        anomaly_type="latency_spike",
        status="resolved",
    )
    facts_open = {
        "service": "payments",
        "error_rate": {"baseline": 0.01, "observed": 0.3},
        "root_cause_service": "database",
    }
    store.insert_df(
        tables.INCIDENT_SUMMARIES,
        pd.DataFrame(
            [
                _summary_row(open_id, "payments", TEMPLATE_SUMMARY, "template", facts_open, None),
                _summary_row(resolved_id, "search", LLM_SUMMARY, "llm", {"service": "search"}, "qwen2.5-coder:0.5b"),
            ]
        ),
    )
    bronze.write_events(bronze_dir, _trace_spans(trace_ids[0], open_started + timedelta(seconds=30)))
    error_logs = _seed_logs(store, open_started, trace_ids[0])

    store.insert_df(
        tables.HEALTH_CHECKS,
        pd.DataFrame(
            [
                dict(
                    checked_at=now - timedelta(minutes=10),
                    component="spark",
                    status="unhealthy",
                    detail="old check",
                    latency_ms=3.0,
                ),
                dict(
                    checked_at=now - timedelta(minutes=1),
                    component="spark",
                    status="healthy",
                    detail="lag 40 s",
                    latency_ms=4.0,
                ),
                dict(
                    checked_at=now - timedelta(minutes=1),
                    component="narrator",
                    status="degraded",
                    detail="LLM unreachable; template fallback",
                    latency_ms=9.0,
                ),
            ]
        ),
    )
    reasons = {"missing field: service": 3, "invalid JSON": 2}
    store.insert_df(
        tables.DEAD_LETTER,
        pd.DataFrame(
            [
                dict(received_at=now - timedelta(minutes=5 + i), source="spark:raw_events", reason=reason, payload="{}")
                for reason, n in reasons.items()
                for i in range(n)
            ]
        ),
    )
    store.insert_df(
        tables.STREAM_PROGRESS,
        pd.DataFrame(
            [
                dict(
                    batch_id=b,
                    processed_at=now - timedelta(seconds=60 - 10 * b),
                    rows_in=1000,
                    rows_rejected=1,
                    rows_late=0,
                    max_event_time=now - timedelta(seconds=90 - 10 * b),
                    watermark=now - timedelta(minutes=2),
                )
                for b in range(3)
            ]
        ),
    )
    store.insert_df(
        tables.MODEL_REGISTRY,
        pd.DataFrame(
            [
                dict(
                    version="if-0001",
                    trained_at=now - timedelta(days=1),
                    model="isolation_forest",
                    metrics=json.dumps({"f1": 0.81}),
                    promoted=True,
                ),
                dict(
                    version="tf-0001",
                    trained_at=now - timedelta(hours=2),
                    model="transformer",
                    metrics=json.dumps({"f1": 0.77}),
                    promoted=False,
                ),
            ]
        ),
    )
    store.heartbeat("detector", "scored 6 services")
    return SeededDashboard(
        now=now,
        open_incident=open_id,
        resolved_incident=resolved_id,
        trace_id=trace_ids[0],
        trace_ids=trace_ids,
        dead_letter_reasons=reasons,
        error_logs=error_logs,
    )


def _seed_logs(store: Store, incident_start: datetime, trace_id: str) -> dict[str, str]:
    """OTLP log rows around the open payments incident; returns the ones its page shows."""
    t = incident_start + timedelta(minutes=2)
    rows = [
        # (service, severity_text, severity_number, body, trace_id, shown as)
        ("payments", "ERROR", 17, "card authorisation failed: upstream timeout", None, "service"),
        ("database", "FATAL", 21, "too many connections", None, "service"),  # the root cause
        ("payments", "error", 0, "retry budget exhausted", None, "service"),  # text only, no number
        ("inventory", "ERROR", 17, "reservation aborted by caller", trace_id, "trace"),  # a sample trace
        ("payments", "INFO", 9, "charge accepted", None, None),  # not an error
        ("inventory", "ERROR", 17, "stock cache miss storm", None, None),  # another service, no sample trace
    ]
    frame = pd.DataFrame(
        [
            dict(
                timestamp=t + timedelta(seconds=i),
                service=svc,
                severity_text=text,
                severity_number=num,
                body=body,
                trace_id=tid,
                span_id=None,
                attributes=None,
            )
            for i, (svc, text, num, body, tid, _) in enumerate(rows)
        ]
        # an error of the incident's service an hour before it: outside its span
        + [
            dict(
                timestamp=incident_start - timedelta(hours=1),
                service="payments",
                severity_text="ERROR",
                severity_number=17,
                body="an old failure",
                trace_id=None,
                span_id=None,
                attributes=None,
            )
        ]
    )
    store.insert_df(tables.LOGS, frame)
    return {body: shown for _, _, _, body, _, shown in rows if shown}
