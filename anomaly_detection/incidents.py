"""Incidents: consecutive anomalous windows of a service, related through the call graph.

- An incident opens on an anomaly of at least `INCIDENT_MIN_SEVERITY`, or on
  two consecutive low ones (a lone low window stays an anomaly, not a page),
  even when the two are scored in different calls (`pending_low`).
- A service's anomalous windows join its open incident while the gap since the
  last anomaly is shorter than `quiet` windows; after `quiet` clean final
  windows the incident resolves (ended_at = end of its last anomalous window).
  Time decides, not the service's windows: a final minute with no window counts
  as clean unless `silence.py` made it an anomaly.
- Correlation (`correlation.py`, when the detector passes the call graph): an
  anomaly of a service connected in the call graph to an open incident, while
  that incident is not quiet, joins it instead of opening its own; the
  incident's `service` is then its most upstream service and
  `related_services` all the others. Without the graph, related services are
  the services anomalous during the incident (give or take `slack`) connected
  to it through other anomalous services (`relate`).
- Root cause: the first of `root_cause_candidates` (ranked from the spans by
  `anomaly_detection.root_cause`); without spans, among the related services
  the ones none of whose callees went wrong, the earliest, then the deepest.
- `updated_at` changes whenever any column of the incident does.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from anomaly_detection import thresholds
from anomaly_detection.correlation import CallGraph

_NS = uuid.UUID("5b0e3c1e-7d0f-4a51-9a55-2f1f3c8a9b10")


@dataclass
class Incident:
    id: str
    service: str
    started_at: datetime
    ended_at: datetime | None
    status: str
    peak_severity: str
    root_cause_service: str | None
    related_services: list[str]
    updated_at: datetime
    last_anomaly_end: datetime = field(compare=False, default=None)
    root_cause_candidates: list[dict] = field(default_factory=list)

    def row(self) -> dict:
        return {
            "id": self.id,
            "service": self.service,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "status": self.status,
            "peak_severity": self.peak_severity,
            "root_cause_service": self.root_cause_service,
            "related_services": list(self.related_services),
            "updated_at": self.updated_at,
            "root_cause_candidates": json.dumps(self.root_cause_candidates) if self.root_cause_candidates else None,
        }

    def same_as(self, other: Incident) -> bool:
        keys = ("service", "started_at", "ended_at", "status", "peak_severity", "root_cause_service")
        ranked = [c.get("service") for c in self.root_cause_candidates] == [
            c.get("service") for c in other.root_cause_candidates
        ]
        return (
            all(getattr(self, k) == getattr(other, k) for k in keys)
            and sorted(self.related_services) == sorted(other.related_services)
            and ranked
        )


def incident_id(service: str, started_at: datetime) -> str:
    return str(uuid.uuid5(_NS, f"incident|{service}|{pd.Timestamp(started_at).isoformat()}"))


def advance(
    open_incidents: dict[str, Incident],
    scored: pd.DataFrame,
    now: datetime,
    quiet: int = thresholds.QUIET_WINDOWS_TO_RESOLVE,
    pending_low: dict[str, tuple[datetime, datetime]] | None = None,
    through: datetime | None = None,
    graph: CallGraph | None = None,
    assigned: dict | None = None,
) -> list[Incident]:
    """Walk newly scored windows (service, window_start, window_end, is_anomaly, severity) in order.

    Mutates `open_incidents` (service -> open incident; with `graph`, several
    services share one correlated incident, see `correlation.py`) and returns
    every incident touched (opened, extended or resolved). `assigned`, when
    given, receives (service, window_start) -> incident id for each anomalous
    window an incident took.

    `pending_low` (service -> (start, end) of a lone low anomaly no incident
    holds yet) is read and updated in place: the live detector scores about one
    window per service per call, so "two low windows in a row" spans calls and
    the caller must carry it (the detector derives it from the stored anomalies).
    `through`: every final window ending at or before it has now been scored;
    incidents quiet for `quiet` windows by then resolve whether or not their
    service sent a window (a silent service makes none).
    """
    touched: dict[str, Incident] = {}
    opened: set[str] = set()  # ids of the incidents opened in this call
    quiet_span = timedelta(minutes=quiet)
    pending_low = {} if pending_low is None else pending_low

    def resolve_quiet(at: datetime) -> None:
        for svc, inc in list(open_incidents.items()):
            if at - inc.last_anomaly_end >= quiet_span:
                inc.status, inc.ended_at = "resolved", inc.last_anomaly_end
                touched[inc.id] = inc
                del open_incidents[svc]

    minute = None
    for row in scored.sort_values(["window_start", "service"]).itertuples(index=False):
        svc = row.service
        ws, we = pd.Timestamp(row.window_start).to_pydatetime(), pd.Timestamp(row.window_end).to_pydatetime()
        if graph is not None and minute is not None and ws != minute:
            _merge_new(open_incidents, touched, opened, quiet_span, graph, assigned)  # the minute before is complete
        minute = ws
        # Every window ending at or before ws has been walked (this call or an earlier one).
        resolve_quiet(ws)
        inc = open_incidents.get(svc)
        if not row.is_anomaly:
            pending_low.pop(svc, None)
            continue
        if inc is None and graph is not None:
            inc = _joinable(open_incidents, svc, ws, quiet_span, graph)
            if inc is not None:
                open_incidents[svc] = inc
                inc.related_services = sorted(set(inc.related_services) | {svc})
                pending_low.pop(svc, None)
        if inc is None:
            # One low-severity window alone is recorded as an anomaly but opens no
            # incident; a second in a row (or anything stronger) does, from the first.
            prev = pending_low.pop(svc, None)
            adjacent = prev is not None and prev[1] == ws
            if (
                thresholds.SEVERITY_ORDER[row.severity] < thresholds.SEVERITY_ORDER[thresholds.INCIDENT_MIN_SEVERITY]
                and not adjacent
            ):
                pending_low[svc] = (ws, we)
                continue
            start = prev[0] if adjacent else ws
            inc = Incident(incident_id(svc, start), svc, start, None, "open", row.severity, svc, [], now, we)
            open_incidents[svc] = inc
            opened.add(inc.id)
            if assigned is not None and start != ws:
                assigned[(svc, pd.Timestamp(start))] = inc.id  # the low window before it
        inc.last_anomaly_end = max(inc.last_anomaly_end, we)
        inc.peak_severity = thresholds.max_severity(inc.peak_severity, row.severity)
        touched[inc.id] = inc
        if assigned is not None:
            assigned[(svc, pd.Timestamp(ws))] = inc.id
    if graph is not None:
        _merge_new(open_incidents, touched, opened, quiet_span, graph, assigned)
    if through is not None:
        resolve_quiet(pd.Timestamp(through).to_pydatetime())
    return list(touched.values())


def _merge_new(
    open_incidents: dict[str, Incident],
    touched: dict[str, Incident],
    opened: set[str],
    quiet_span: timedelta,
    graph: CallGraph,
    assigned: dict | None,
) -> None:
    """Fold incidents opened in this call into a connected, overlapping open one.

    Windows of one minute are walked service by service, so two services of one
    fault can each open an incident before either is connected to the other's
    (a third service links them later). Only incidents opened in this call are
    folded: an incident already stored keeps its id.
    """
    changed = True
    while changed:
        changed = False
        live = [i for i in {id(v): v for v in open_incidents.values()}.values() if i.status == "open"]
        for new in sorted((i for i in live if i.id in opened), key=lambda i: (i.started_at, i.id), reverse=True):
            host = next(
                (
                    o
                    for o in sorted(live, key=lambda i: (i.started_at, i.id))
                    if o is not new
                    and new.started_at < o.last_anomaly_end + quiet_span
                    and o.started_at < new.last_anomaly_end + quiet_span
                    and any(graph.within(m, members(o)) for m in members(new))
                ),
                None,
            )
            if host is None:
                continue
            host.related_services = sorted((members(host) | members(new)) - {host.service})
            host.started_at = min(host.started_at, new.started_at)
            host.last_anomaly_end = max(host.last_anomaly_end, new.last_anomaly_end)
            host.peak_severity = thresholds.max_severity(host.peak_severity, new.peak_severity)
            for k in [k for k, v in open_incidents.items() if v is new]:
                open_incidents[k] = host
            if assigned is not None:
                for k, v in assigned.items():
                    if v == new.id:
                        assigned[k] = host.id
            touched.pop(new.id, None)
            touched[host.id] = host
            opened.discard(new.id)
            changed = True
            break


def _joinable(
    open_incidents: dict[str, Incident], svc: str, ws: datetime, quiet_span: timedelta, graph: CallGraph
) -> Incident | None:
    """The open incident a new anomaly of `svc` belongs to (connected and recent), the most recent first."""
    best = None
    for inc in {id(i): i for i in open_incidents.values()}.values():
        if ws - inc.last_anomaly_end >= quiet_span or not graph.within(svc, members(inc)):
            continue
        if best is None or inc.last_anomaly_end > best.last_anomaly_end:
            best = inc
    return best


def members(inc: Incident) -> set[str]:
    """Every service of an incident (its own and the related ones)."""
    return {inc.service, *inc.related_services}


def call_depths(deps: pd.DataFrame) -> dict[str, int]:
    """Depth of each service in the call graph (callers with no caller = 0; longest path)."""
    children: dict[str, set[str]] = {}
    parents: dict[str, set[str]] = {}
    for p, c in zip(deps.get("parent_service", []), deps.get("child_service", []), strict=True):
        if p == c:
            continue
        children.setdefault(p, set()).add(c)
        parents.setdefault(c, set()).add(p)
        children.setdefault(c, set())
        parents.setdefault(p, set())
    depth = {s: 0 for s in children if not parents.get(s)}
    frontier = list(depth)
    for _ in range(len(children) + 1):  # bounded: cycles cannot loop forever
        nxt = []
        for s in frontier:
            for c in children.get(s, ()):
                if depth.get(c, -1) < depth[s] + 1:
                    depth[c] = depth[s] + 1
                    nxt.append(c)
        if not nxt:
            break
        frontier = nxt
    for s in children:
        depth.setdefault(s, 0)
    return depth


def relate(
    inc: Incident, anomalies: pd.DataFrame, deps: pd.DataFrame, slack: timedelta = timedelta(minutes=2)
) -> tuple[list[str], str]:
    """(related services, root cause service) for one incident."""
    end = inc.ended_at or inc.last_anomaly_end or inc.started_at
    a = anomalies[(anomalies["window_start"] >= inc.started_at - slack) & (anomalies["window_start"] <= end + slack)]
    onset = a.groupby("service")["window_start"].min().to_dict()
    onset.setdefault(inc.service, inc.started_at)
    anomalous = set(onset)
    edges = [
        (p, c) for p, c in zip(deps.get("parent_service", []), deps.get("child_service", []), strict=True) if p != c
    ]
    neighbours: dict[str, set[str]] = {}
    for p, c in edges:
        if p in anomalous and c in anomalous:
            neighbours.setdefault(p, set()).add(c)
            neighbours.setdefault(c, set()).add(p)
    group, stack = {inc.service}, [inc.service]
    while stack:
        for n in neighbours.get(stack.pop(), ()):
            if n not in group:
                group.add(n)
                stack.append(n)
    children = {p: set() for p in group}
    for p, c in edges:
        if p in group and c in group:
            children[p].add(c)
    depth = call_depths(deps)
    leaves = [s for s in group if not children.get(s)] or sorted(group)
    root = min(leaves, key=lambda s: (pd.Timestamp(onset[s]), -depth.get(s, 0), s))
    return sorted(group - {inc.service}), root
