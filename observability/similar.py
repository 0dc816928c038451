"""Similar past incidents: the platform's memory of its own incidents.

For one incident, the nearest *earlier* incidents, scored by what they share
with it: the affected service, anomaly types, root cause, related services and
the top error messages (read from the latest summary's facts, so no bronze scan
is needed). Both the narrator (a separate, labelled block beside the facts) and
the dashboard's incident page read it, so it lives here in observability/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from observability import tables

LOOKBACK = timedelta(days=30)
# what a shared trait is worth; an incident sharing nothing but a related service is not similar
WEIGHTS = {"service": 3, "anomaly_type": 2, "root_cause": 2, "error_message": 2, "related_service": 1}


@dataclass
class SimilarIncident:
    id: str
    service: str
    started_at: datetime
    ended_at: datetime | None
    anomaly_types: list[str]
    root_cause_service: str | None
    related_services: list[str]
    summary: str | None
    score: int
    shared: list[str] = field(default_factory=list)  # why it is similar, e.g. "service checkout"

    @property
    def minutes(self) -> int | None:
        if self.ended_at is None:
            return None
        return max(1, round((self.ended_at - self.started_at).total_seconds() / 60))

    def line(self) -> str:
        """One line for the narrator: when, how long, and which traits it shares, by name only.

        Not the other incident's service, types or root cause themselves: the 0.5B model copied
        "root cause payments" from a similar incident into a cascade rooted in database, its type
        into this one's headline, and its start time as this one's (measured with llm.evaluate)."""
        lasted = f"lasted {self.minutes} minutes" if self.minutes is not None else "still open"
        traits = list(
            dict.fromkeys(
                t.split(" ")[0] if t.startswith("service") else " ".join(t.split(" ")[:2]) for t in self.shared
            )
        )
        same = traits[0] if len(traits) == 1 else f"{', '.join(traits[:-1])} and {traits[-1]}"
        return (
            f"on {self.started_at:%Y-%m-%d}, {lasted}, same {same}"  # no time of day: it was copied as this one's start
        )


_SQL = f"""
WITH latest AS (
    SELECT incident_id, summary, facts FROM {tables.INCIDENT_SUMMARIES}
    QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY created_at DESC) = 1
)
SELECT i.id, i.service, i.started_at, i.ended_at, i.root_cause_service, i.related_services,
       (SELECT list(DISTINCT a.anomaly_type ORDER BY a.anomaly_type) FROM {tables.ANOMALIES} a
         WHERE a.service = i.service AND a.window_start >= i.started_at
           AND a.window_start < coalesce(i.ended_at, i.updated_at) + INTERVAL 1 MINUTE) AS types,
       l.summary, l.facts
FROM {tables.INCIDENTS} i LEFT JOIN latest l ON l.incident_id = i.id
WHERE i.id = ? OR (i.started_at < ? AND i.started_at >= ?)
"""


def error_messages(facts) -> set[str]:
    """The quoted messages of a facts mapping's `top_errors` line (stored JSON or dict)."""
    if isinstance(facts, str):
        try:
            facts = json.loads(facts)
        except ValueError:
            return set()
    text = (facts or {}).get("top_errors") or ""
    return {m for m in text.split('"')[1::2] if m}


def _shared(target: dict, other: dict) -> list[tuple[str, str]]:
    """(trait, value) pairs the two incidents share; traits are WEIGHTS' keys."""
    out = []
    if other["service"] == target["service"]:
        out.append(("service", other["service"]))
    out += [("anomaly_type", t) for t in other["types"] if t in target["types"]]
    if other["root"] and other["root"] == target["root"]:
        out.append(("root_cause", other["root"]))
    out += [("error_message", m) for m in sorted(other["errors"] & target["errors"])]
    out += [("related_service", s) for s in sorted(set(other["related"]) & set(target["related"]))]
    return out


def similar_incidents(
    con,
    incident_id: str,
    *,
    limit: int = 3,
    lookback: timedelta = LOOKBACK,
    types: list[str] | None = None,
    errors: set[str] | None = None,
) -> list[SimilarIncident]:
    """The nearest earlier incidents (most shared traits first, then the most recent).

    `types` and `errors` override what is read for the incident itself (the narrator
    knows them before any summary exists); `con` is an open DuckDB connection.
    """
    row = con.execute(f"SELECT started_at FROM {tables.INCIDENTS} WHERE id = ?", [incident_id]).fetchone()
    if row is None:
        return []
    (started,) = row
    rows = con.execute(_SQL, [incident_id, started, started - lookback]).fetchall()
    parsed = {}
    for rid, svc, st, en, root, related, rtypes, summary, facts in rows:
        parsed[rid] = {
            "id": rid,
            "service": svc,
            "started": st,
            "ended": en,
            "root": root or svc,
            "related": [s for s in (related or []) if s],
            "types": list(rtypes or []),
            "summary": summary,
            "errors": error_messages(facts),
        }
    target = parsed.pop(incident_id)
    if types is not None:
        target["types"] = list(types)
    if errors is not None:
        target["errors"] = set(errors)
    found = []
    for other in parsed.values():
        shared = _shared(target, other)
        if all(trait == "related_service" for trait, _ in shared):
            continue
        found.append(
            SimilarIncident(
                other["id"],
                other["service"],
                other["started"],
                other["ended"],
                other["types"],
                other["root"],
                other["related"],
                other["summary"],
                sum(WEIGHTS[t] for t, _ in shared),
                [f"{t.replace('_', ' ')} {v}" for t, v in shared],
            )
        )
    found.sort(key=lambda s: (-s.score, -s.started_at.timestamp()))
    return found[:limit]
