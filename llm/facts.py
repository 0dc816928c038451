"""The facts sheet of one incident, read from DuckDB (and the bronze Parquet).

Every figure is rendered here, once, already rounded, as `key: value` lines:
the prompt shows exactly these lines, the grounding check accepts only the
numbers in them, the template is built from them, and the JSON stored beside a
summary is this mapping. Nothing downstream computes a new figure.

Each line is labelled by the role it plays (`affected_service`,
`root_cause_service`, `related_services`, `root_cause_candidates`, `callers`,
`callees`, one line per metric) and the lines are ordered by importance: what happened, then its
defining symptom (`symptom`: traffic for a traffic drop or surge, errors for an
error surge, latency for a latency spike or drift), then when, then cause, then
the other metrics. Similar past incidents are other incidents: they are kept
apart (`similar_past_incidents`, a list shown as its own labelled block) and
the grounding check never lets them lend a word to this incident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from observability import bronze, error_logs, tables
from observability import similar as similar_incidents
from observability.logs import get_logger
from observability.store import Store, utcnow

log = get_logger(__name__)

BEFORE = timedelta(minutes=30)  # the baseline window just before an incident
SIMILAR_SHOWN = 2  # similar past incidents offered to the model (each costs ~25 prompt tokens)
MAX_TRACE_IDS = 1  # the summary cites one; each 32-hex id costs ~20 generated tokens
TEMPLATE_REASON = "template_reason"  # why a template was stored instead of the model's text
CLAIM_FAILURES = "claim_failures"  # the refused texts' failing claims: [{attempt, kind, claim, reason}]
REJECTED_SUMMARIES = "rejected_summaries"  # the refused texts themselves, by attempt
CANDIDATES = "root_cause_candidates"  # the detector's ranked root-cause services (incidents.root_cause_candidates)
MAX_CANDIDATES = 3
CALLERS, CALLEES = "callers", "callees"  # services calling the affected one, services it calls
SIMILAR = "similar_past_incidents"  # other incidents: a separate block, never facts of this one
# stored with the facts, not shown to the model as facts of this incident
META_KEYS = ("incident_id", "incident_updated_at", TEMPLATE_REASON, CLAIM_FAILURES, REJECTED_SUMMARIES, SIMILAR)
SIMILAR_HEADER = "SIMILAR PAST INCIDENTS (other, earlier incidents; not facts of this one):"

# the metric that defines each anomaly type (its symptom), and how a summary words it
SYMPTOM_METRIC = {
    "traffic_drop": "request_rate",
    "traffic_surge": "request_rate",
    "error_surge": "error_rate",
    "latency_spike": "p95_latency",
    "latency_drift": "p95_latency",
}
METRIC_WORDS = {
    "request_rate": "traffic",
    "error_rate": "error rate",
    "p95_latency": "p95 latency",
    "p99_latency": "p99 latency",
}
METRIC_KEYS = ("error_rate", "p95_latency", "p99_latency", "request_rate")


@dataclass
class Facts:
    """Rendered facts (ordered) plus what the narrator needs around them."""

    lines: dict  # role -> rendered value; SIMILAR holds a list of lines about other incidents
    incident_id: str
    service: str
    incident_updated_at: datetime
    services: list[str] = field(default_factory=list)  # services the facts name

    def as_json(self) -> dict:
        return {
            "incident_id": self.incident_id,
            "incident_updated_at": self.incident_updated_at.isoformat(sep=" "),
            **self.lines,
        }

    def block(self) -> str:
        return facts_block(self.lines)


def facts_block(lines: dict) -> str:
    """The FACTS lines, then the similar past incidents as their own labelled block."""
    text = "\n".join(f"{k}: {v}" for k, v in lines.items() if k not in META_KEYS)
    return f"{text}\n\n{similar_block(lines.get(SIMILAR))}"


def similar_block(similar) -> str:
    items = similar if isinstance(similar, list) else [similar] if similar else []
    return SIMILAR_HEADER + "".join(f"\n- {line}" for line in items) if items else f"{SIMILAR_HEADER} none"


def symptom_line(types: list[str], metrics: dict[str, str]) -> str:
    """The defining symptom(s) of the incident's anomaly types, worded from the metric lines."""
    keys = list(dict.fromkeys(SYMPTOM_METRIC[t] for t in types if t in SYMPTOM_METRIC))
    if not keys:  # multivariate or unknown: every metric that moved
        keys = [k for k in METRIC_KEYS if not metrics[k].startswith(("about the same", "unknown"))]
    return (
        "; ".join(f"{METRIC_WORDS[k]} {metrics[k]}" for k in keys)
        or "no clear change in error rate, latency or traffic"
    )


def ordered_metrics(types: list[str], metrics: dict[str, str]) -> dict[str, str]:
    """The metric lines, the defining symptom's first."""
    first = [SYMPTOM_METRIC[t] for t in types if t in SYMPTOM_METRIC]
    return {k: metrics[k] for k in dict.fromkeys([*first, *METRIC_KEYS])}


# -- formatting: the one place figures are rounded ------------------------------------
def fmt_time(ts: datetime | None) -> str:
    return f"{ts:%Y-%m-%d %H:%M} UTC" if ts else "unknown"


def fmt_pct(fraction: float | None) -> str:
    if fraction is None:
        return "no data"
    pct = fraction * 100
    return f"{pct:.1f}%" if pct >= 1 or pct == 0 else f"{pct:.2f}%"


def fmt_ms(ms: float | None) -> str:
    return "no data" if ms is None else f"{ms:.0f} ms"


def fmt_rate(per_min: float | None) -> str:
    return "no data" if per_min is None else f"{per_min:.0f} requests/min"


def fmt_range(started: datetime, ended: datetime | None, minutes: int) -> str:
    """Worded as the summary says it, so a small model copies the phrase instead of
    reassembling a date (it garbled "2026-11-30 20:58" into "2111-30")."""
    if ended is None:
        return f"since {fmt_time(started)} (ongoing, {minutes} minutes so far)"
    if ended.date() == started.date():
        return f"from {started:%H:%M} to {ended:%H:%M} UTC on {started:%Y-%m-%d} ({minutes} minutes)"
    return f"from {fmt_time(started)} to {fmt_time(ended)} ({minutes} minutes)"


def trend(before: float | None, during: float | None) -> str:
    """A direction word, so a small model need not compare numbers itself."""
    if before is None or during is None:
        return "unknown"
    if before <= 0:
        return "up" if during > 0 else "about the same"
    ratio = during / before
    return "up" if ratio > 1.2 else "down" if ratio < 0.8 else "about the same"


def _before_during(before: dict, during: dict, key: str, fmt, peak: float | None = None) -> str:
    b, d = before.get(key), during.get(key)
    text = f"{trend(b, d)}, {fmt(b)} before and {fmt(d)} during"
    if peak is not None:
        text += f" (peak {fmt(peak)})"
    return text


# -- queries ----------------------------------------------------------------------------
def _window_metrics(con, service: str, start: datetime, end: datetime) -> dict:
    row = con.execute(
        f"""SELECT count(*), avg(request_count), sum(error_count)::DOUBLE / nullif(sum(request_count), 0),
                   avg(p95_latency_ms), max(p95_latency_ms), avg(p99_latency_ms)
            FROM {tables.SERVICE_METRICS} WHERE service = ? AND window_start >= ? AND window_start < ?""",
        [service, start, end],
    ).fetchone()
    n, rate, err, p95, p95_peak, p99 = row
    if not n:
        return {}
    return {"rate": rate, "error_rate": err, "p95": p95, "p95_peak": p95_peak, "p99": p99}


def _anomaly_types_and_traces(con, service: str, start: datetime, end: datetime) -> tuple[list[str], list[str]]:
    rows = con.execute(
        f"""SELECT anomaly_type, sample_trace_ids FROM {tables.ANOMALIES}
            WHERE service = ? AND window_start >= ? AND window_start < ? ORDER BY window_start""",
        [service, start, end],
    ).fetchall()
    types: list[str] = []
    traces: list[str] = []
    for anomaly_type, ids in rows:
        if anomaly_type not in types:
            types.append(anomaly_type)
        for t in ids or []:
            if t not in traces:
                traces.append(t)
    if len(traces) < MAX_TRACE_IDS:
        more = con.execute(
            f"""SELECT trace_id FROM {tables.TRACE_SAMPLES}
                WHERE service = ? AND window_start >= ? AND window_start < ? AND reason IN ('error', 'slow')
                ORDER BY window_start, trace_id LIMIT 10""",
            [service, start - timedelta(minutes=1), end],
        ).fetchall()
        traces += [t for (t,) in more if t not in traces]
    return types, traces[:MAX_TRACE_IDS]


def _top_endpoints(con, service: str, start: datetime, end: datetime, limit: int = 2) -> list[str]:
    rows = con.execute(
        f"""SELECT endpoint, sum(error_count)::DOUBLE / nullif(sum(request_count), 0) AS err, avg(p95_latency_ms) AS p95
            FROM {tables.ENDPOINT_METRICS} WHERE service = ? AND window_start >= ? AND window_start < ?
            GROUP BY endpoint ORDER BY sum(error_count) DESC, avg(p95_latency_ms) DESC NULLS LAST LIMIT ?""",
        [service, start, end, limit],
    ).fetchall()
    return [f"{ep} ({fmt_pct(err)} errors, p95 {fmt_ms(p95)})" for ep, err, p95 in rows]


def _candidates(raw) -> list[tuple[str, float]]:
    """The top ranked root-cause candidates (service, score), best first; [] when none or unreadable."""
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw or []
        out = [(str(c["service"]), float(c.get("score") or 0.0)) for c in items if c.get("service")]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        log.warning("root_cause_candidates unreadable", error=str(exc))
        return []
    return out[:MAX_CANDIDATES]


def _dependencies(con, service: str, start: datetime, end: datetime) -> tuple[list[str], list[str]]:
    """Who called the service during the incident (callers) and whom it called (callees)."""
    rows = con.execute(
        f"""SELECT parent_service, child_service, sum(call_count) AS calls FROM {tables.SERVICE_DEPENDENCIES}
            WHERE (parent_service = ? OR child_service = ?) AND parent_service <> child_service
              AND window_start >= ? AND window_start < ?
            GROUP BY ALL ORDER BY calls DESC""",
        [service, service, start - timedelta(minutes=1), end],
    ).fetchall()
    callers = [p for p, c, _ in rows if c == service]
    callees = [c for p, c, _ in rows if p == service]
    return callers[:3], callees[:3]


def known_services(store: Store) -> set[str]:
    """Every service name the platform has seen (the grounding check's vocabulary)."""

    def work(con):
        names: set[str] = set()
        for sql in (
            f"SELECT DISTINCT service FROM {tables.SERVICE_METRICS}",
            f"SELECT DISTINCT service FROM {tables.ANOMALIES}",
            f"SELECT DISTINCT service FROM {tables.INCIDENTS}",
            f"SELECT DISTINCT root_cause_service FROM {tables.INCIDENTS}",
            f"SELECT DISTINCT unnest(related_services) FROM {tables.INCIDENTS}",
            f"SELECT DISTINCT parent_service FROM {tables.SERVICE_DEPENDENCIES}",
            f"SELECT DISTINCT child_service FROM {tables.SERVICE_DEPENDENCIES}",
        ):
            names.update(r[0] for r in con.execute(sql).fetchall() if r[0])
        return names

    return store.read(work)


def build_facts(store: Store, incident_id: str, bronze_dir) -> Facts:
    """Read everything about one incident and render its facts sheet."""

    def work(con):
        row = con.execute(
            f"""SELECT service, started_at, ended_at, status, peak_severity, root_cause_service,
                       related_services, updated_at, root_cause_candidates FROM {tables.INCIDENTS} WHERE id = ?""",
            [incident_id],
        ).fetchone()
        if row is None:
            raise KeyError(f"incident {incident_id} not found")
        service, started, ended, status, severity, root, related, updated, candidates = row
        end = ended or max(updated, started + timedelta(minutes=1))
        before = _window_metrics(con, service, started - BEFORE, started)
        during = _window_metrics(con, service, started, max(end, started + timedelta(minutes=1)))
        types, traces = _anomaly_types_and_traces(con, service, started, max(end, started + timedelta(minutes=1)))
        endpoints = _top_endpoints(con, service, started, max(end, started + timedelta(minutes=1)))
        callers, callees = _dependencies(con, service, started, max(end, started + timedelta(minutes=1)))
        return (
            service,
            started,
            ended,
            status,
            severity,
            root,
            list(related or []),
            updated,
            before,
            during,
            types,
            traces,
            endpoints,
            callers,
            callees,
            candidates,
        )

    (
        service,
        started,
        ended,
        status,
        severity,
        root,
        related,
        updated,
        before,
        during,
        types,
        traces,
        endpoints,
        callers,
        callees,
        candidates,
    ) = store.read(work)
    candidates = _candidates(candidates)
    end = ended or utcnow()
    try:
        errors = bronze.top_error_messages(bronze_dir, service, started, end + timedelta(minutes=1), limit=2)
    except Exception as exc:  # a bronze read must never stop narration
        log.warning("bronze error messages unavailable", incident_id=incident_id, error=str(exc))
        errors = []
    try:
        log_lines = store.read(
            lambda con: error_logs.top_error_lines(con, service, started, end + timedelta(minutes=1))
        )
    except Exception as exc:  # nor must a logs read
        log.warning("error logs unavailable", incident_id=incident_id, error=str(exc))
        log_lines = []
    similar = store.read(
        lambda con: similar_incidents.similar_incidents(
            con, incident_id, limit=SIMILAR_SHOWN, types=types, errors={m for m, _ in errors}
        )
    )
    minutes = max(1, round((end - started).total_seconds() / 60))
    related = [s for s in related if s and s != service]
    metrics = {
        "error_rate": _before_during(before, during, "error_rate", fmt_pct),
        "p95_latency": _before_during(before, during, "p95", fmt_ms, peak=during.get("p95_peak")),
        "p99_latency": _before_during(before, during, "p99", fmt_ms),
        "request_rate": _before_during(before, during, "rate", fmt_rate),
    }
    lines = {
        "affected_service": service,
        "anomaly_types": ", ".join(types) or "unknown",
        "symptom": symptom_line(types, metrics),
        "time_range": fmt_range(started, ended, minutes),
        "severity": severity,
        "status": status,
        "root_cause_service": root or service,
        "related_services": ", ".join(related) or "none",
        **({CANDIDATES: ", ".join(f"{c} (score {sc:.2f})" for c, sc in candidates)} if candidates else {}),
        **ordered_metrics(types, metrics),
        "top_errors": "; ".join(f'"{msg}" ({n} times)' for msg, n in errors) or "none recorded",
        # the service's most frequent error log lines (OTLP logs), when it sends any
        **({"error_logs": "; ".join(f'"{line}" ({n} times)' for line, n in log_lines)} if log_lines else {}),
        "affected_endpoints": "; ".join(endpoints) or "no data",
        **({CALLERS: ", ".join(callers)} if callers else {}),
        **({CALLEES: ", ".join(callees)} if callees else {}),
        "sample_trace_ids": ", ".join(traces) or "none",
        SIMILAR: [s.line() for s in similar],
    }
    services = list(
        dict.fromkeys([service, *([root] if root else []), *related, *[c for c, _ in candidates], *callers, *callees])
    )
    return Facts(lines=lines, incident_id=incident_id, service=service, incident_updated_at=updated, services=services)
