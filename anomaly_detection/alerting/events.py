"""Which notifications an incident calls for, derived from the store and recorded once.

Why derived, not pushed by the detector: the incidents table is the detector's
and the summaries the narrator's; the notifier compares them with what it has
already recorded in `alert_events` and records each new transition there in
one transaction, keyed by (incident, event). A transition is thereby durable
before anything is sent, and a restart (or a second pass over unchanged
incidents) derives nothing twice.

Events of one incident, in order:
- `opened`: its peak severity reached `ALERT_MIN_SEVERITY` (an incident below it sends nothing);
- `escalated`: its peak severity rose above the severity last notified (one per level reached);
- `summarised`: the narrator wrote its first summary;
- `resolved`: it resolved;
- `reminder`: still open and nothing notified for `ALERT_REPEAT_MINUTES` (when set).

An incident never notified, resolved and unchanged for `ALERT_LOOKBACK_MINUTES`
is history (a first start on an old database pages nobody for it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from anomaly_detection.thresholds import SEVERITY_ORDER
from observability import tables
from observability.store import Store

OPENED, ESCALATED, SUMMARISED, RESOLVED, REMINDER = "opened", "escalated", "summarised", "resolved", "reminder"
MAX_CANDIDATES_IN_TEXT = 3


@dataclass
class Notified:
    """What `alert_events` already holds for one incident."""

    events: set[str] = field(default_factory=set)
    severity: str = "low"  # the highest severity an opened/escalated event carried
    last_at: datetime | None = None
    reminders: int = 0


@dataclass(frozen=True)
class AlertEvent:
    id: str
    incident_id: str
    event: str
    severity: str
    payload: dict
    deliver: bool = True  # False: recorded for the notifier's own memory (a cleared forecast), sent nowhere


def event_id(incident_id: str, event: str, suffix: str | int | None = None) -> str:
    return f"{incident_id}|{event}" + ("" if suffix is None else f"|{suffix}")


def candidate_incidents(store: Store, now: datetime, lookback: timedelta) -> pd.DataFrame:
    """Incidents that may need a notification: open, recently changed, or notified but not finished."""
    return store.fetch_df(
        f"""SELECT * FROM {tables.INCIDENTS}
            WHERE status = 'open' OR updated_at >= ?
               OR id IN (SELECT incident_id FROM {tables.ALERT_EVENTS} GROUP BY incident_id
                         HAVING NOT (bool_or(event = '{RESOLVED}') AND bool_or(event = '{SUMMARISED}')))
            ORDER BY started_at, id""",
        [now - lookback],
    )


def latest_summaries(store: Store, ids: list[str]) -> dict[str, dict]:
    """incident id -> its newest summary (text, generated_by, created_at)."""
    if not ids:
        return {}
    rows = store.fetch_all(
        f"""SELECT incident_id, summary, generated_by, created_at FROM {tables.INCIDENT_SUMMARIES}
            WHERE incident_id IN ({", ".join("?" for _ in ids)})
            QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY created_at DESC, id DESC) = 1""",
        ids,
    )
    return {r[0]: {"text": r[1], "generated_by": r[2], "created_at": _iso(r[3])} for r in rows}


def notified_state(con_or_store, ids: list[str]) -> dict[str, Notified]:
    """incident id -> what has been recorded for it (works on a Store or an open connection)."""
    if not ids:
        return {}
    sql = f"""SELECT incident_id, event, severity, created_at FROM {tables.ALERT_EVENTS}
              WHERE incident_id IN ({", ".join("?" for _ in ids)}) ORDER BY seq"""
    rows = (
        con_or_store.fetch_all(sql, ids)
        if isinstance(con_or_store, Store)
        else con_or_store.execute(sql, ids).fetchall()
    )
    state: dict[str, Notified] = {}
    for incident_id, event, severity, created_at in rows:
        s = state.setdefault(incident_id, Notified())
        s.events.add(event)
        if event in (OPENED, ESCALATED) and SEVERITY_ORDER.get(severity, 0) >= SEVERITY_ORDER.get(s.severity, 0):
            s.severity = severity
        s.reminders += event == REMINDER
        s.last_at = created_at if s.last_at is None else max(s.last_at, created_at)
    return state


def derive(
    incidents: pd.DataFrame,
    summaries: dict[str, dict],
    state: dict[str, Notified],
    *,
    min_severity: str,
    repeat: timedelta | None,
    now: datetime,
    dashboard_url: str,
    quiet: bool = False,
) -> list[AlertEvent]:
    """The events not yet recorded, in delivery order (pure: the caller records them).

    `quiet` (quiet hours now): no reminders below critical, so none pile up to be sent when they end."""
    out: list[AlertEvent] = []
    for inc in incidents.to_dict("records"):
        remind = None if quiet and inc["peak_severity"] != "critical" else repeat
        out += _incident_events(
            inc, summaries.get(inc["id"]), state.get(inc["id"]), min_severity, remind, now, dashboard_url
        )
    return out


def _incident_events(
    inc: dict, summary: dict | None, seen: Notified | None, min_severity: str, repeat, now, dashboard_url: str
) -> list[AlertEvent]:
    rank = SEVERITY_ORDER.get(inc["peak_severity"], 0)
    if seen is None:
        if rank < SEVERITY_ORDER[min_severity]:
            return []
        seen, names = Notified(severity=inc["peak_severity"]), [(OPENED, None)]
    else:
        names = []
        if OPENED in seen.events and rank > SEVERITY_ORDER.get(seen.severity, 0):
            names.append((ESCALATED, inc["peak_severity"]))
    if summary is not None and SUMMARISED not in seen.events:
        names.append((SUMMARISED, None))
    if inc["status"] == "resolved" and RESOLVED not in seen.events:
        names.append((RESOLVED, None))
    elif not names and inc["status"] == "open" and repeat and seen.last_at is not None and now - seen.last_at >= repeat:
        names.append((REMINDER, seen.reminders + 1))
    return [
        AlertEvent(
            event_id(inc["id"], name, suffix),
            inc["id"],
            name,
            inc["peak_severity"],
            build_payload(event_id(inc["id"], name, suffix), name, inc, summary, now, dashboard_url),
        )
        for name, suffix in names
    ]


def build_payload(eid: str, event: str, inc: dict, summary: dict | None, now: datetime, dashboard_url: str) -> dict:
    """The generic webhook body: the event, the incident, its root-cause candidates, summary and link."""
    return {
        "id": eid,
        "event": event,
        "created_at": _iso(now),
        "title": f"[{str(inc['peak_severity']).upper()}] {inc['service']}: incident {event}",
        "incident": {
            "id": inc["id"],
            "service": inc["service"],
            "status": inc["status"],
            "severity": inc["peak_severity"],
            "started_at": _iso(inc["started_at"]),
            "ended_at": _iso(inc["ended_at"]),
            "root_cause_service": _none(inc.get("root_cause_service")),
            "related_services": [str(s) for s in _list(inc.get("related_services"))],
            "updated_at": _iso(inc["updated_at"]),
        },
        "root_cause_candidates": _candidates(inc.get("root_cause_candidates")),
        "summary": summary,
        "dashboard_url": f"{dashboard_url.rstrip('/')}/incidents?incident={inc['id']}",
    }


def record(store: Store, events: list[AlertEvent], channels: list[str], now: datetime) -> int:
    """Insert the events not already there (one transaction); returns how many were new."""
    if not events:
        return 0

    def work(con) -> int:
        have = {
            r[0]
            for r in con.execute(
                f"SELECT id FROM {tables.ALERT_EVENTS} WHERE id IN ({', '.join('?' for _ in events)})",
                [e.id for e in events],
            ).fetchall()
        }
        fresh = [e for e in events if e.id not in have]
        base = con.execute(f"SELECT coalesce(max(seq), 0) FROM {tables.ALERT_EVENTS}").fetchone()[0]
        con.executemany(
            f"""INSERT INTO {tables.ALERT_EVENTS} (id, seq, incident_id, event, severity, channels, payload, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                [
                    e.id,
                    base + i + 1,
                    e.incident_id,
                    e.event,
                    e.severity,
                    channels if e.deliver else [],
                    json.dumps(e.payload),
                    now,
                ]
                for i, e in enumerate(fresh)
            ],
        )
        return len(fresh)

    return store.write(work)


def text(payload: dict) -> str:
    """Plain text of a notification (Slack and email): title, facts, likely causes, summary, link."""
    if payload.get("forecast"):  # an SLA risk, not an incident
        from anomaly_detection.alerting import forecast_events  # it imports this module

        return forecast_events.text(payload)
    inc = payload["incident"]
    lines = [payload["title"], f"status: {inc['status']}, started {inc['started_at']} UTC"]
    if inc["ended_at"]:
        lines[-1] += f", ended {inc['ended_at']} UTC"
    if inc["related_services"]:
        lines.append("related services: " + ", ".join(inc["related_services"]))
    causes = payload["root_cause_candidates"][:MAX_CANDIDATES_IN_TEXT]
    if causes:
        lines.append("likely root cause: " + ", ".join(_cause(c) for c in causes))
    elif inc["root_cause_service"]:
        lines.append(f"likely root cause: {inc['root_cause_service']}")
    if payload["summary"]:
        lines += ["", payload["summary"]["text"]]
    lines += ["", payload["dashboard_url"]]
    return "\n".join(lines)


def _cause(c: dict) -> str:
    score = c.get("score")
    return f"{c.get('service')} ({score:.2f})" if isinstance(score, int | float) else str(c.get("service"))


def _candidates(value) -> list[dict]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    parsed = json.loads(value) if isinstance(value, str) else value
    return [c for c in parsed if isinstance(c, dict)] if isinstance(parsed, list) else []


def _list(value) -> list:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return list(value)


def _none(value):
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def _iso(value) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()
