"""anomaly_detection.persistence on a real DuckDB file: the open incidents come back in one query,
each with when it was last anomalous, as the detector's per-incident query used to say."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest

from anomaly_detection import incidents, persistence
from observability import tables

T0 = datetime(2025, 5, 5, 12, 0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def incident(id_, service, started, status="open", related=(), candidates=None):
    return incidents.Incident(
        id_,
        service,
        started,
        None if status == "open" else at(50),
        status,
        "high",
        service,
        list(related),
        at(60),
        root_cause_candidates=candidates or [],
    )


def anomaly(id_, service, start_minute, incident_id):
    return {
        "id": id_,
        "service": service,
        "window_start": at(start_minute),
        "window_end": at(start_minute + 1),
        "detected_at": at(60),
        "anomaly_type": "latency_spike",
        "severity": "high",
        "score": 0.9,
        "detectors": "{}",
        "baseline": "{}",
        "observed": "{}",
        "sample_trace_ids": [],
        "incident_id": incident_id,
    }


def seed(store):
    stored = [
        incident("A", "checkout", at(0), candidates=[{"service": "payments", "score": 0.8, "evidence": "self time"}]),
        incident("B", "search", at(10)),
        incident("C", "frontend", at(15), related=["cart"]),
        incident("D", "checkout", at(-30), status="resolved"),
    ]
    rows = [
        anomaly("a1", "checkout", 4, "A"),  # taken by A
        anomaly("a2", "checkout", 7, None),  # its own service, after it opened, taken by none: counts
        anomaly("a3", "checkout", -10, None),  # before A opened: does not count
        anomaly("a4", "checkout", 40, "D"),  # another incident's window of the same service
        anomaly("b0", "search", 5, None),  # before B opened: B has no anomaly yet
        anomaly("c1", "cart", 20, "C"),  # a related service's window taken by C
        anomaly("c2", "cart", 30, None),  # a related service's window taken by none: not C's own service
    ]
    changed = stored

    def write(con):
        persistence.upsert(con, tables.INCIDENTS, pd.DataFrame([i.row() for i in changed]))
        persistence.upsert(con, tables.ANOMALIES, pd.DataFrame(rows))

    store.write(write)


def per_incident_last_end(store, inc) -> datetime:
    """The query the detector ran once per open incident before this module existed (the oracle)."""
    last = store.fetch_one(
        f"""SELECT max(window_end) FROM {tables.ANOMALIES}
            WHERE incident_id = ? OR (incident_id IS NULL AND service = ? AND window_start >= ?)""",
        [inc.id, inc.service, inc.started_at],
    )[0]
    return pd.Timestamp(last or inc.started_at).to_pydatetime()


def test_open_incidents_come_back_in_one_query_with_their_last_anomalous_window(store):
    seed(store)
    reads = []
    real_read = store.read
    store.read = lambda fn: reads.append(fn) or real_read(fn)
    got = persistence.open_incidents(store)
    store.read = real_read
    assert len(reads) == 1, "one query however many incidents are open"
    by_id = {i.id: i for i in got}
    assert sorted(by_id) == ["A", "B", "C"], "resolved incidents stay closed"
    assert by_id["A"].last_anomaly_end == at(8), "its own or its service's unassigned windows since it opened"
    assert by_id["B"].last_anomaly_end == at(10), "no anomaly yet: its start"
    assert by_id["C"].last_anomaly_end == at(21), "a related service's windows count when the incident took them"
    for inc in got:
        assert inc.last_anomaly_end == per_incident_last_end(store, inc), inc.id


def test_open_incidents_keep_every_column_the_detector_compares(store):
    seed(store)
    by_id = {i.id: i for i in persistence.open_incidents(store)}
    a, c = by_id["A"], by_id["C"]
    assert (a.service, a.started_at, a.ended_at, a.status, a.peak_severity) == ("checkout", at(0), None, "open", "high")
    assert a.root_cause_candidates == [{"service": "payments", "score": 0.8, "evidence": "self time"}]
    assert c.related_services == ["cart"] and by_id["B"].related_services == []
    assert a.updated_at == at(60)
    assert a.same_as(incident("A", "checkout", at(0), candidates=[{"service": "payments"}]))


def test_write_cycle_commits_anomalies_outbox_incidents_and_progress_together(store):
    """One transaction: a failure after the writes leaves none of them."""
    anomalies = pd.DataFrame([{k: v for k, v in anomaly("n1", "checkout", 5, None).items() if k != "incident_id"}])
    progress = pd.DataFrame([{"service": "checkout", "last_window_start": at(5), "updated_at": at(6)}])
    kwargs = dict(
        anomalies=anomalies,
        messages=[("n1", "n1", {"service": "checkout"})],
        topic="anomalies",
        changed=[incident("A", "checkout", at(0))],
        progress=progress,
        now=at(6),
    )

    def write_then_fail(con):
        persistence.write_cycle(con, **kwargs)
        raise RuntimeError("killed before the commit")

    with pytest.raises(RuntimeError, match="killed before the commit"):
        store.write(write_then_fail)
    counts = {
        t: store.fetch_one(f"SELECT count(*) FROM {t}")[0]
        for t in (tables.ANOMALIES, tables.OUTBOX, tables.INCIDENTS, tables.DETECTOR_PROGRESS)
    }
    assert counts == dict.fromkeys(counts, 0)

    store.write(lambda con: persistence.write_cycle(con, **kwargs))
    counts = {
        t: store.fetch_one(f"SELECT count(*) FROM {t}")[0]
        for t in (tables.ANOMALIES, tables.OUTBOX, tables.INCIDENTS, tables.DETECTOR_PROGRESS)
    }
    assert counts == dict.fromkeys(counts, 1)
    value = json.loads(store.fetch_one(f"SELECT value FROM {tables.OUTBOX}")[0])
    assert value["id"] == "n1" and value["service"] == "checkout"
    assert store.fetch_one(f"SELECT last_window_start FROM {tables.DETECTOR_PROGRESS}")[0] == at(5)
