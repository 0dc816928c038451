"""Ensemble, severity, incidents and the scenario metrics on crafted inputs."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from anomaly_detection import incidents, thresholds
from anomaly_detection.detectors.base import BaseDetector
from anomaly_detection.ensemble import Ensemble
from anomaly_detection.evaluation.scenarios import compute_metrics

T0 = datetime(2025, 5, 5, 12, 0)


class Fixed(BaseDetector):
    """A detector returning fixed scores (for testing the ensemble only)."""

    def __init__(self, name, scores, kind):
        self.name, self.scores, self.kind = name, scores, kind

    def _evaluate(self, frame):
        n = len(frame)
        return pd.DataFrame(
            {"score": self.scores[:n], "anomaly_type": [self.kind] * n, "baseline": [{}] * n, "observed": [{}] * n}
        )


def windows(n):
    return pd.DataFrame(
        {
            "service": ["svc"] * n,
            "window_start": [T0 + timedelta(minutes=i) for i in range(n)],
            "request_count": [100] * n,
        }
    )


def test_severity_cuts_and_threshold():
    assert not thresholds.is_anomaly(0.49) and thresholds.is_anomaly(0.5)
    assert [thresholds.severity(s) for s in (0.5, 0.7, 0.85, 0.97)] == ["low", "medium", "high", "critical"]


def test_ensemble_takes_the_strongest_weighted_verdict_and_names_multivariate():
    ens = Ensemble(
        {
            "rules": Fixed("rules", np.array([0.1, 0.9, 0.1]), "error_surge"),
            "robust_stats": Fixed("robust_stats", np.array([0.1, 0.2, 0.1]), "latency_spike"),
            "transformer": Fixed("transformer", np.array([0.2, 0.3, 1.0]), "latency_spike"),
        }
    ).fit(windows(3))
    out = ens.evaluate(windows(3))
    assert list(out.is_anomaly) == [False, True, True]
    assert out.anomaly_type[1] == "error_surge" and out.anomaly_type[2] == "multivariate"
    assert out.score[2] == 0.8, "a model alone speaks at its weight"
    assert set(out.detectors[0]) == {"rules", "robust_stats", "transformer"}


def scored(flags, severity="high", service="svc"):
    return pd.DataFrame(
        {
            "service": service,
            "window_start": [T0 + timedelta(minutes=i) for i in range(len(flags))],
            "window_end": [T0 + timedelta(minutes=i + 1) for i in range(len(flags))],
            "is_anomaly": flags,
            "severity": severity,
        }
    )


def test_incident_opens_extends_across_short_gaps_and_resolves_after_quiet_windows():
    open_ = {}
    touched = incidents.advance(open_, scored([0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0]), T0)
    assert len(touched) == 1
    inc = touched[0]
    assert inc.status == "resolved" and inc.started_at == T0 + timedelta(minutes=1)
    assert inc.ended_at == T0 + timedelta(minutes=5) and not open_


def test_a_lone_low_window_opens_no_incident_but_two_do():
    assert incidents.advance({}, scored([0, 1, 0, 0], severity="low"), T0) == []
    two = incidents.advance({}, scored([0, 1, 1, 0], severity="low"), T0)
    assert len(two) == 1 and two[0].started_at == T0 + timedelta(minutes=1)


def test_two_low_windows_open_an_incident_when_scored_one_call_at_a_time():
    """The live detector scores about one window per service per cycle: the pending low must carry over."""
    open_, pending = {}, {}
    one = lambda minute: scored([1], severity="low").assign(  # noqa: E731
        window_start=T0 + timedelta(minutes=minute), window_end=T0 + timedelta(minutes=minute + 1)
    )
    calls = [incidents.advance(open_, one(m), T0, pending_low=pending) for m in (0, 1, 2)]
    assert calls[0] == [] and len(calls[1]) == 1 and len(calls[2]) == 1
    assert calls[1][0].started_at == T0 and calls[2][0].id == calls[1][0].id and "svc" in open_


def test_a_low_window_then_a_gap_then_a_low_window_opens_nothing():
    pending = {}
    first = scored([1], severity="low")
    later = first.assign(window_start=T0 + timedelta(minutes=2), window_end=T0 + timedelta(minutes=3))
    assert incidents.advance({}, first, T0, pending_low=pending) == []
    assert incidents.advance({}, later, T0, pending_low=pending) == [], "a minute without a window is not 'in a row'"


def test_a_pending_low_window_is_the_start_of_the_incident_a_stronger_one_opens():
    pending = {}
    incidents.advance({}, scored([1], severity="low"), T0, pending_low=pending)
    nxt = scored([1], severity="high").assign(
        window_start=T0 + timedelta(minutes=1), window_end=T0 + timedelta(minutes=2)
    )
    (inc,) = incidents.advance({}, nxt, T0, pending_low=pending)
    assert inc.started_at == T0 and inc.peak_severity == "high"


def test_an_open_incident_resolves_on_time_without_windows_of_its_service():
    open_ = {}
    (inc,) = incidents.advance(open_, scored([1]), T0)
    assert incidents.advance(open_, scored([])[:0], T0, through=T0 + timedelta(minutes=5)) == [] and open_, (
        "4 quiet minutes"
    )
    (done,) = incidents.advance(open_, scored([])[:0], T0, through=T0 + timedelta(minutes=6))
    assert done.status == "resolved" and done.ended_at == T0 + timedelta(minutes=1) and not open_
    other = scored([0], service="other").assign(
        window_start=T0 + timedelta(minutes=9), window_end=T0 + timedelta(minutes=10)
    )
    open_ = {}
    incidents.advance(open_, scored([1]), T0)
    (done,) = incidents.advance(open_, other, T0)
    assert done.service == "svc" and done.status == "resolved", (
        "another service's later window proves the quiet minutes final"
    )


def test_silence_of_a_steady_service_is_flagged_and_of_a_sparse_one_is_not():
    from anomaly_detection import silence

    def frame(service, minutes, count):
        return pd.DataFrame(
            {"service": service, "window_start": [T0 + timedelta(minutes=m) for m in minutes], "request_count": count}
        )

    steady, sparse = frame("steady", range(0, 120), 300), frame("sparse", range(0, 120, 10), 500)
    history = pd.concat([steady, sparse], ignore_index=True)
    empty = history[:0]
    marks = {"steady": T0 + timedelta(minutes=119), "sparse": T0 + timedelta(minutes=119)}
    out = silence.silent_windows(history, empty, marks, through=T0 + timedelta(minutes=180))
    assert set(out.service) == {"steady"}, "a service silent 9 of every 10 minutes may stay silent an hour"
    starts = list(out.window_start)
    assert starts[0] <= T0 + timedelta(minutes=122) and starts == [
        starts[0] + timedelta(minutes=i) for i in range(len(starts))
    ]
    assert starts[-1] == T0 + timedelta(minutes=179)
    assert (
        list(out.score) == sorted(out.score)
        and out.score.iloc[-1] == 1.0
        and (out.anomaly_type == "traffic_drop").all()
    )
    assert silence.silent_windows(
        history, empty, {s: T0 + timedelta(minutes=179) for s in marks}, T0 + timedelta(minutes=180)
    ).empty, "minutes already judged are not judged again"
    assert silence.silence_probability(rate=10.0, empty_share=0.5, k=3) == 0.125, (
        "bursty: the empty-minute share, not Poisson"
    )
    assert silence.silence_score(1e-5) == 0.5 and silence.silence_score(1e-8) == 0.8


def test_root_cause_is_the_deepest_callee_that_went_wrong_first():
    deps = pd.DataFrame({"parent_service": ["a", "a", "b", "x"], "child_service": ["b", "c", "d", "a"]})
    anomalies = pd.DataFrame(
        {"service": ["a", "b", "d", "c"], "window_start": [T0 + timedelta(minutes=m) for m in (1, 0, 0, 30)]}
    )
    inc = incidents.Incident(
        "i", "a", T0 + timedelta(minutes=1), None, "open", "high", "a", [], T0, T0 + timedelta(minutes=3)
    )
    related, root = incidents.relate(inc, anomalies, deps)
    assert related == ["b", "d"] and root == "d", "c went wrong much later; x never did"
    assert incidents.call_depths(deps) == {"x": 0, "a": 1, "b": 2, "c": 2, "d": 3}


def test_scenario_metrics_follow_the_documented_definitions():
    lab = pd.DataFrame(
        {
            "scenario_type": ["error_surge", "error_surge", "traffic_drop"],
            "service": ["p", "c", "s"],
            "root_service": ["p", "p", "s"],
            "start_time": [T0, T0, T0 + timedelta(hours=1)],
            "end_time": [T0 + timedelta(minutes=10)] * 2 + [T0 + timedelta(hours=1, minutes=10)],
        }
    )
    anom = pd.DataFrame(
        {
            "service": ["p", "s"],
            "window_start": [T0 + timedelta(minutes=1), T0 + timedelta(hours=1)],
            "window_end": [T0 + timedelta(minutes=2), T0 + timedelta(hours=1, minutes=1)],
        }
    )
    inc = pd.DataFrame(
        {
            "id": ["1", "2", "3"],
            "service": ["p", "s", "z"],
            "started_at": [T0 + timedelta(minutes=1), T0 + timedelta(hours=1), T0 + timedelta(hours=3)],
            "ended_at": [
                T0 + timedelta(minutes=9),
                T0 + timedelta(hours=1, minutes=5),
                T0 + timedelta(hours=3, minutes=2),
            ],
            "root_cause_service": ["p", "s", "z"],
        }
    )
    m = compute_metrics(lab, anom, inc)
    assert m.loc["error_surge", "recall"] == 0.5 and m.loc["error_surge", "median_delay_s"] == 120
    assert m.loc["traffic_drop", "recall"] == 1.0 and m.loc["traffic_drop", "median_delay_s"] == 60
    assert m.loc["all", "precision"] == 2 / 3 and m.loc["all", "false_alerts"] == 1


def test_a_traffic_drop_at_the_entry_is_traced_there_though_the_models_flag_its_callee():
    """Generator traffic_drop:search: search (entry) drops, the database it calls is `multivariate`."""
    from anomaly_detection.service import _traffic_origin

    minutes = [T0 + timedelta(minutes=m) for m in range(5)]
    anomalies = pd.DataFrame(
        {
            "service": ["search"] * 5 + ["database"] * 5,
            "window_start": minutes * 2,
            "anomaly_type": ["traffic_drop"] * 5 + ["multivariate"] * 5,
        }
    )
    inc = incidents.Incident(
        "i", "search", T0, None, "open", "critical", None, ["database"], T0, T0 + timedelta(minutes=5)
    )
    assert [c["service"] for c in _traffic_origin(inc, anomalies)] == ["search"]
    anomalies.loc[anomalies["service"] == "database", "anomaly_type"] = "error_surge"
    assert _traffic_origin(inc, anomalies) == [], "errors travel up: a failing callee is no traffic origin"


def test_error_surge_rule_judges_a_low_volume_service_but_never_its_first_window():
    """5 failures of 5 requests against a clean baseline page (the Poisson test carries the volume);
    a service seen for the first time is not judged on its first window."""
    from anomaly_detection.detectors import RulesDetector

    def window(minute, req, err):
        return {
            "service": "quiet",
            "window_start": T0 + timedelta(minutes=minute),
            "request_count": req,
            "error_count": err,
            "error_rate": err / req,
            "avg_latency_ms": 20.0,
            "p95_latency_ms": 30.0,
            "p99_latency_ms": 35.0,
        }

    frame = pd.DataFrame([window(0, 6, 0), window(1, 5, 0), window(2, 5, 5)])
    v = RulesDetector().evaluate(frame)
    assert (v["score"] >= 0.5).tolist() == [False, False, True] and v["anomaly_type"].iloc[2] == "error_surge"
    first = RulesDetector().evaluate(pd.DataFrame([window(0, 18, 6)]))
    assert first["score"].iloc[0] < 0.5, "a third of the first window failing is that service's normal, for all we know"


def test_scenario_root_cause_accuracy_and_incidents_per_scenario():
    from anomaly_detection.evaluation.scenarios import root_cause_by_type

    lab = pd.DataFrame(
        {
            "scenario_type": ["error_surge", "error_surge", "traffic_drop", "traffic_drop"],
            "service": ["p", "c", "s", "db"],
            "root_service": ["p", "p", "s", "s"],
            "start_time": [T0, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1)],
            "end_time": [T0 + timedelta(minutes=10)] * 2 + [T0 + timedelta(hours=1, minutes=10)] * 2,
        }
    )
    inc = pd.DataFrame(
        {
            "service": ["c", "c", "s"],
            "started_at": [T0 + timedelta(minutes=1), T0 + timedelta(minutes=4), T0 + timedelta(hours=1)],
            "ended_at": [T0 + timedelta(minutes=9), T0 + timedelta(minutes=6), T0 + timedelta(hours=1, minutes=5)],
            "root_cause_service": ["p", "c", "db"],
            "related_services": [["p"], [], ["db"]],
        }
    )
    r = root_cause_by_type(lab, inc)
    assert r.loc["error_surge", "rca_accuracy"] == 1.0 and r.loc["error_surge", "incidents_per_scenario"] == 2
    assert r.loc["traffic_drop", "rca_accuracy"] == 0.0, "the drop at s was blamed on its callee"
    assert r.loc["all", "scenarios"] == 2 and r.loc["all", "rca_accuracy"] == 0.5
