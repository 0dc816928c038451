"""Alert correlation: anomalies of services connected in the call graph and close in time form one incident.

A fault shows in the service where it starts and in every caller it reaches, so
per-service incidents would page once per affected service. Instead, a service
without an open incident that turns anomalous joins an open incident when

- the incident's last anomaly ended less than the quiet span before (the same
  rule that keeps one service's anomalies in one incident), and
- the service is within `MAX_HOPS` call edges of one of the incident's services
  (`service_dependencies`, either direction: a fault travels to callers, and a
  caller's trouble shows in what it calls). Two hops let one unflagged service
  in between (a service whose totals stayed normal while one endpoint passed
  the fault on).

The incident is shown where users see it first: its `service` is the most
upstream of its services (an entry service, no callers, when one is affected;
else the least deep), the earliest of those; `related_services` are all the
others.
"""

from __future__ import annotations

from collections import deque

import pandas as pd

MAX_HOPS = 2


class CallGraph:
    """Undirected neighbourhoods and call depths of the services seen in the traces."""

    def __init__(self, deps: pd.DataFrame | None) -> None:
        from anomaly_detection.incidents import call_depths

        self.neighbours: dict[str, set[str]] = {}
        if deps is not None and len(deps):
            for p, c in zip(deps["parent_service"], deps["child_service"], strict=False):
                if p != c:
                    self.neighbours.setdefault(p, set()).add(c)
                    self.neighbours.setdefault(c, set()).add(p)
        self.depth = call_depths(deps) if deps is not None and len(deps) else {}

    def within(self, a: str, targets: set[str], hops: int = MAX_HOPS) -> bool:
        """Whether `a` is at most `hops` call edges from any of `targets`."""
        if a in targets:
            return True
        seen, frontier = {a}, deque([(a, 0)])
        while frontier:
            node, d = frontier.popleft()
            if d == hops:
                continue
            for n in self.neighbours.get(node, ()):
                if n in targets:
                    return True
                if n not in seen:
                    seen.add(n)
                    frontier.append((n, d + 1))
        return False

    def most_upstream(self, services: set[str], onset: dict) -> str:
        """The entry (or least deep) service, earliest first, then by name."""
        return min(services, key=lambda s: (self.depth.get(s, 0), pd.Timestamp(onset.get(s, pd.Timestamp.max)), s))
