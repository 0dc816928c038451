"""Root-cause ranking on hand-built call graphs whose answer is known by construction.

gateway -> A (through a client span in gateway), A -> B and A -> C (client spans in A).
Each test makes 30 minutes of normal traces, then 3 minutes with one fault, and
checks that the ranking names the faulty service first.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pandas as pd
import pytest

from anomaly_detection import root_cause
from anomaly_detection.root_cause import RootCauseRanker

T0 = datetime(2024, 5, 1, 12, 0)
NORMAL_MIN, FAULT_MIN = 30, 3
SELF = {"gateway": 2.0, "A": 5.0, "B": 10.0, "C": 8.0}  # ms inside each service
WIRE = 1.0  # ms on the wire of each call


def build(fault=None, per_minute=20, seed=1) -> pd.DataFrame:
    """Spans of normal traffic then FAULT_MIN minutes of `fault`:
    dict(extra_self={svc: ms}, extra_wire={(caller, callee): ms}, fail=svc)."""
    rng = random.Random(seed)
    rows = []
    n_id = iter(range(1, 10**9))

    def sid():
        return f"{next(n_id):016x}"

    for minute in range(NORMAL_MIN + FAULT_MIN):
        faulty = fault if minute >= NORMAL_MIN else {}
        for i in range(per_minute):
            trace = f"{rng.getrandbits(128):032x}"
            t = T0 + timedelta(minutes=minute, seconds=i * 60 / per_minute)

            def self_ms(svc, faulty=faulty):
                extra = (faulty or {}).get("extra_self", {}).get(svc, 0.0)
                share = (faulty or {}).get("share")  # the extra self time on this share of visits only
                if extra and share is not None and rng.random() >= share:
                    extra = 0.0
                return SELF[svc] * rng.uniform(0.9, 1.1) + extra

            def wire(a, b, faulty=faulty):
                return WIRE * rng.uniform(0.9, 1.1) + (faulty or {}).get("extra_wire", {}).get((a, b), 0.0)

            fail = (faulty or {}).get("fail")

            def visit(svc, parent, start, fail=fail):
                """One visit of svc (entry span + client spans); returns (span rows, duration, failed)."""
                entry = sid()
                spans, cursor = [], start + timedelta(milliseconds=self_ms(svc) / 2)
                failed = fail == svc
                for callee in {"gateway": ["A"], "A": ["B", "C"]}.get(svc, []):
                    client = sid()
                    w = wire(svc, callee)
                    child_rows, child_dur, child_failed = visit(callee, client, cursor + timedelta(milliseconds=w / 2))
                    spans.append(
                        dict(
                            span_id=client,
                            parent_span_id=entry,
                            service=svc,
                            endpoint="HTTP POST",
                            timestamp=cursor,
                            latency_ms=child_dur + w,
                            status_code=500 if child_failed else 200,
                            error_message=None,
                        )
                    )
                    spans += child_rows
                    cursor += timedelta(milliseconds=child_dur + w)
                    failed = failed or child_failed
                dur = (cursor - start).total_seconds() * 1000 + self_ms(svc) / 2
                spans.append(
                    dict(
                        span_id=entry,
                        parent_span_id=parent,
                        service=svc,
                        endpoint=f"/{svc}",
                        timestamp=start,
                        latency_ms=dur,
                        status_code=500 if failed else 200,
                        error_message=("disk full" if fail == svc else "upstream failed") if failed else None,
                    )
                )
                return spans, dur, failed

            spans, _, _ = visit("gateway", None, t)
            for s in spans:
                s["trace_id"] = trace
            rows += spans
    return pd.DataFrame(rows)


def ranking(fault, per_minute=20, **kw):
    spans = build(fault, per_minute=per_minute)
    start = T0 + timedelta(minutes=NORMAL_MIN)
    return RootCauseRanker(onset_slack=timedelta(0), **kw).rank(spans, start, start + timedelta(minutes=FAULT_MIN))


def test_visits_split_self_time_into_server_and_wire():
    v = root_cause.visits(build())
    mean = v.groupby("service")[["self_ms", "gap_ms"]].mean()
    assert mean.loc["gateway", "self_ms"] == pytest.approx(SELF["gateway"], rel=0.1)
    for svc in ("A", "B", "C"):  # a callee's self time = its own + the wire into it; callers keep theirs
        assert mean.loc[svc, "self_ms"] == pytest.approx(SELF[svc] + WIRE, rel=0.1)
        assert mean.loc[svc, "gap_ms"] == pytest.approx(WIRE, rel=0.15)


def test_slow_callee_is_first_not_its_callers():
    # B's own time +200 ms: A and gateway get 200 ms slower end to end, but only by B's time.
    c = ranking({"extra_self": {"B": 200.0}})
    assert c[0].service == "B" and c[0].score > 0.9
    assert "self time +200 ms" in c[0].evidence
    assert all(x.service == "B" or x.score < 0.1 for x in c)


def test_slow_network_of_a_callee_is_the_callees():
    # The wire into C is 100 ms slower (a delayed pod network): A's client span grows, C's server span does not.
    c = ranking({"extra_wire": {("A", "C"): 100.0}})
    assert c[0].service == "C"


def test_cpu_starved_caller_is_told_from_its_callees():
    # A is slow inside and every call it makes is slow on A's side: A, not B or C.
    c = ranking({"extra_self": {"A": 60.0}, "extra_wire": {("A", "B"): 60.0, ("A", "C"): 60.0}})
    assert c[0].service == "A"


def test_errors_originate_where_callees_were_healthy():
    c = ranking({"fail": "B"})
    assert c[0].service == "B"
    assert "own errors" in c[0].evidence and "'disk full'" in c[0].evidence
    assert "A" not in [x.service for x in c]  # A failed only because B did


def test_clean_traffic_names_no_one_with_confidence():
    spans = build(None)
    start = T0 + timedelta(minutes=NORMAL_MIN)
    c = RootCauseRanker(onset_slack=timedelta(0)).rank(spans, start, start + timedelta(minutes=FAULT_MIN))
    assert all(x.score < 0.5 for x in c) or not c


def test_no_spans_no_candidates():
    assert RootCauseRanker().rank(pd.DataFrame(), T0, T0 + timedelta(minutes=1)) == []


def test_an_incident_is_ranked_on_its_onset_and_a_later_fault_comes_second():
    """B slows down first; 8 minutes later, while the incident is still open, C slows down more.
    The root is where the incident began (B); the later fault's service is named second."""
    first = build({"extra_self": {"B": 30.0}})
    later = build({"extra_self": {"C": 120.0}}, seed=2)
    later["timestamp"] = later["timestamp"] + timedelta(minutes=8)
    spans = pd.concat([first, later], ignore_index=True)
    start = T0 + timedelta(minutes=NORMAL_MIN)
    c = RootCauseRanker(onset_slack=timedelta(0)).rank(spans, start, start + timedelta(minutes=8 + FAULT_MIN))
    assert [x.service for x in c[:2]] == ["B", "C"]
    assert "whole incident" in c[1].evidence
    short = RootCauseRanker(onset_slack=timedelta(0)).rank(spans, start, start + timedelta(minutes=FAULT_MIN))
    assert short[0].service == "B" and "C" not in [x.service for x in short[:2]]


def test_hundreds_of_own_errors_outweigh_a_trivial_significant_slowdown():
    """`make local`'s error_surge:payments was blamed on a service a few of whose thousands of
    visits were slower: any added self time weighed as much as all the errors. Each signal now
    weighs its excess abnormal visits."""
    c = ranking({"fail": "B", "extra_self": {"C": 60.0}, "share": 0.03}, per_minute=200)
    assert [x.service for x in c[:2]] == ["B", "C"], c
    assert c[0].score > 0.8


def test_a_window_past_max_spans_is_read_as_a_sample_of_whole_traces_and_ranks_the_same(tmp_path):
    """The detector reads an incident's spans plus an hour of baseline: at high span rates reading
    them whole took it to 15 GB. Past max_spans it reads a hash sample of whole traces."""
    from observability import bronze

    spans = build({"extra_self": {"B": 200.0}}, per_minute=60)
    bronze.write_events(tmp_path, spans)
    lo, hi = T0, T0 + timedelta(minutes=NORMAL_MIN + FAULT_MIN)
    whole = root_cause.read_spans(tmp_path, lo, hi)
    assert len(whole) == len(spans) and list(whole.columns) == list(root_cause.SPAN_COLUMNS)

    cap = len(spans) // 4
    sample = root_cause.read_spans(tmp_path, lo, hi, max_spans=cap)
    assert 0.5 * cap < len(sample) <= 1.5 * cap
    per_trace = spans.groupby("trace_id").size()
    got = sample.groupby("trace_id").size()
    assert (got == per_trace[got.index]).all()  # every sampled trace has all its spans

    start = T0 + timedelta(minutes=NORMAL_MIN)
    ranker = RootCauseRanker(onset_slack=timedelta(0))
    c = ranker.rank(sample, start, start + timedelta(minutes=FAULT_MIN))
    assert c[0].service == "B" and c[0].score > 0.9
