"""Alert correlation: one incident per fault across the services it reaches, none across unrelated ones."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from anomaly_detection import incidents
from anomaly_detection.correlation import CallGraph

T0 = datetime(2024, 5, 1, 12, 0)
# gateway -> A -> B -> C ; Y -> X (another system)
DEPS = pd.DataFrame({"parent_service": ["gateway", "A", "B", "Y"], "child_service": ["A", "B", "C", "X"]})


def windows(spec: dict[str, list[int]], minutes: int, severity: str = "high") -> pd.DataFrame:
    """spec: service -> minutes it is anomalous; every service has a window every minute."""
    rows = []
    for svc, bad in spec.items():
        for m in range(minutes):
            rows.append(
                {
                    "service": svc,
                    "window_start": T0 + timedelta(minutes=m),
                    "window_end": T0 + timedelta(minutes=m + 1),
                    "is_anomaly": m in bad,
                    "severity": severity,
                }
            )
    return pd.DataFrame(rows)


def test_call_graph_hops_and_upstream():
    g = CallGraph(DEPS)
    assert g.within("gateway", {"B"}) and not g.within("gateway", {"C"})  # two hops, not three
    assert g.within("C", {"A"}) and not g.within("X", {"A", "B", "C", "gateway"})
    onset = {"B": T0, "A": T0 + timedelta(minutes=1), "gateway": T0 + timedelta(minutes=2)}
    assert g.most_upstream({"A", "B", "gateway"}, onset) == "gateway"  # the entry, though it went wrong last
    assert g.most_upstream({"A", "B"}, onset) == "A"


def test_a_fault_across_connected_services_is_one_incident_and_unrelated_ones_stay_apart():
    open_: dict = {}
    assigned: dict = {}
    scored = windows({"B": [2, 3, 4], "A": [3, 4], "gateway": [4], "X": [3, 4], "Y": []}, minutes=8)
    touched = incidents.advance(open_, scored, T0, graph=CallGraph(DEPS), assigned=assigned)
    assert len(touched) == 2
    fault = next(i for i in touched if i.service == "B")
    other = next(i for i in touched if i.service == "X")
    assert incidents.members(fault) == {"A", "B", "gateway"} and incidents.members(other) == {"X"}
    assert open_["A"] is open_["B"] is open_["gateway"] is fault
    assert fault.started_at == T0 + timedelta(minutes=2) and fault.last_anomaly_end == T0 + timedelta(minutes=5)
    assert {k: v for k, v in assigned.items() if v == fault.id}.keys() == {
        ("B", pd.Timestamp(T0 + timedelta(minutes=m))) for m in (2, 3, 4)
    } | {("A", pd.Timestamp(T0 + timedelta(minutes=m))) for m in (3, 4)} | {
        ("gateway", pd.Timestamp(T0 + timedelta(minutes=4)))
    }


def test_without_the_graph_each_service_keeps_its_own_incident():
    scored = windows({"B": [2, 3], "A": [3]}, minutes=6)
    assert len(incidents.advance({}, scored, T0)) == 2


def test_a_later_fault_after_the_quiet_span_is_a_new_incident():
    open_: dict = {}
    g = CallGraph(DEPS)
    first = incidents.advance(open_, windows({"B": [1, 2], "C": [2]}, minutes=5), T0, graph=g)
    assert len(first) == 1 and first[0].status == "open"
    later = windows({"B": [], "C": [], "A": [15, 16]}, minutes=20)
    later = later[later["window_start"] >= T0 + timedelta(minutes=5)]
    touched = incidents.advance(open_, later, T0, graph=g)
    resolved = [i for i in touched if i.status == "resolved"]
    new = [i for i in touched if i.status == "open"]
    assert [i.id for i in resolved] == [first[0].id] and resolved[0].ended_at == T0 + timedelta(minutes=3)
    assert len(new) == 1 and incidents.members(new[0]) == {"A"}
    assert "B" not in open_ and "C" not in open_  # every key of the resolved incident is gone


def test_a_low_window_of_a_connected_service_joins_an_open_incident():
    open_: dict = {}
    g = CallGraph(DEPS)
    scored = pd.concat([windows({"B": [1, 2, 3]}, minutes=5), windows({"A": [2]}, minutes=5, severity="low")])
    (inc,) = incidents.advance(open_, scored, T0, graph=g)
    assert incidents.members(inc) == {"A", "B"}


def test_incidents_opened_apart_in_one_minute_are_folded_when_a_link_appears():
    # C and gateway are three hops apart: each opens an incident at minute 1; A (linking both) follows.
    open_: dict = {}
    scored = windows({"C": [1, 2], "gateway": [1, 2], "A": [2]}, minutes=4)
    touched = incidents.advance(open_, scored, T0, graph=CallGraph(DEPS))
    assert len(touched) == 1 and incidents.members(touched[0]) == {"A", "C", "gateway"}
    assert open_["C"] is open_["gateway"] is open_["A"]


def test_retraining_masks_every_service_of_a_correlated_incident(tmp_path):
    from anomaly_detection import data
    from observability import tables
    from observability.settings import Settings
    from observability.store import Store

    store = Store.from_settings(Settings(DATA_DIR=tmp_path))
    store.migrate()
    store.execute(
        f"""INSERT INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity, root_cause_service,
            related_services, updated_at) VALUES ('i', 'gateway', ?, ?, 'resolved', 'high', 'B', ['A', 'B'], ?)""",
        [T0, T0 + timedelta(minutes=5), T0],
    )
    spans = data.incident_spans(store)
    assert sorted(spans.service) == ["A", "B", "gateway"]
    windows_ = pd.DataFrame({"service": ["A", "C"], "window_start": [T0 + timedelta(minutes=2)] * 2})
    assert list(data.mask_spans(windows_, spans)) == [True, False]
