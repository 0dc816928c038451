"""Root-cause evaluation metrics: recall, precision and AS@k of incidents against known faults.

Definitions (issue 13):
- an incident *overlaps* a fault when [started_at, ended_at] meets
  [fault start, fault end + TOLERANCE] (an open incident ends at its last
  anomalous window);
- recall = faults with an overlapping incident / faults;
- precision = incidents overlapping some fault / incidents;
- AS@k = faults whose true root-cause service is among the first k candidates of
  the earliest incident overlapping it / faults (a missed fault counts as a miss).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

TOLERANCE = timedelta(minutes=1)
KS = (1, 3, 5)


@dataclass
class FaultResult:
    start: datetime
    root: str
    fault_type: str
    incidents: list[dict] = field(default_factory=list)  # overlapping, earliest first
    ranking: list[str] = field(default_factory=list)  # candidates of the earliest overlapping incident

    def rank_of_root(self) -> int | None:
        return self.ranking.index(self.root) + 1 if self.root in self.ranking else None


@dataclass
class RcaResult:
    faults: list[FaultResult]
    incidents: int
    true_incidents: int

    @property
    def recall(self) -> float:
        return sum(1 for f in self.faults if f.incidents) / len(self.faults) if self.faults else float("nan")

    @property
    def precision(self) -> float:
        return self.true_incidents / self.incidents if self.incidents else float("nan")

    def accuracy_at(self, k: int) -> float:
        if not self.faults:
            return float("nan")
        return sum(1 for f in self.faults if (r := f.rank_of_root()) is not None and r <= k) / len(self.faults)

    def incidents_per_fault(self) -> float:
        counts = sorted(len(f.incidents) for f in self.faults)
        return float(pd.Series(counts).median()) if counts else float("nan")


def candidates_of(row) -> list[str]:
    """Ranked candidate services of an incident row: root_cause_candidates, else root_cause_service."""
    raw = row.get("root_cause_candidates") if hasattr(row, "get") else None
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if isinstance(raw, list) and raw:
        return [c["service"] for c in raw if isinstance(c, dict) and c.get("service")]
    root = row.get("root_cause_service") if hasattr(row, "get") else None
    return [root] if isinstance(root, str) and root else []


def evaluate(faults, incidents: pd.DataFrame, tol: timedelta = TOLERANCE) -> RcaResult:
    """`faults`: objects with start, end, service, fault_type; `incidents`: rows of the incidents table
    with `ended_at` filled (the caller closes open incidents at their last anomalous window)."""
    inc = incidents.sort_values("started_at").reset_index(drop=True) if len(incidents) else incidents
    overlapping_any: set[int] = set()
    out = []
    for f in faults:
        res = FaultResult(f.start, f.service, f.fault_type)
        for i, row in inc.iterrows():
            if row["started_at"] <= f.end + tol and row["ended_at"] >= f.start:
                overlapping_any.add(i)
                res.incidents.append(row.to_dict())
        if res.incidents:
            res.ranking = candidates_of(res.incidents[0])
        out.append(res)
    return RcaResult(out, len(inc), len(overlapping_any))


def _count(values) -> int:
    return 0 if values is None else len(values)


def summary_line(r: RcaResult) -> str:
    return (
        f"rca recall={r.recall:.3f} precision={r.precision:.3f} as1={r.accuracy_at(1):.3f} as3={r.accuracy_at(3):.3f}"
    )


def report(r: RcaResult, top: int = 5) -> str:
    lines = []
    for f in r.faults:
        rank = f.rank_of_root()
        lines.append(
            f"fault {f.start:%Y-%m-%d %H:%M:%S} {f.fault_type:<15} root={f.root:<32} incidents={len(f.incidents):<3} "
            f"root_rank={rank if rank is not None else '-'}"
        )
        for i in f.incidents[:3]:
            lines.append(
                f"    incident {i['service']} {pd.Timestamp(i['started_at']):%H:%M}-{pd.Timestamp(i['ended_at']):%H:%M} "
                f"severity={i.get('peak_severity')} related={_count(i.get('related_services'))}"
            )
        if f.ranking:
            lines.append("    ranking: " + ", ".join(f"{k + 1}. {s}" for k, s in enumerate(f.ranking[:top])))
    lines.append(
        f"faults={len(r.faults)} incidents={r.incidents} overlapping={r.true_incidents} "
        f"median_incidents_per_fault={r.incidents_per_fault():.1f} as5={r.accuracy_at(5):.3f}"
    )
    lines.append(summary_line(r))
    return "\n".join(lines)
