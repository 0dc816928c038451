"""observability.traces on hand-built trees: tree, skew, orphans, self time, critical path, findings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from observability import traces
from observability.traces import SYNTHETIC_ROOT_ID, Section, build_tree, critical_path, self_times

T0 = 1_700_000_000_000.0


def span(span_id, parent, start, duration, service=None, status=200, **extra):
    row = {
        "span_id": span_id,
        "parent_span_id": parent,
        "timestamp": T0 + start,
        "latency_ms": duration,
        "service": service or span_id,
        "endpoint": extra.pop("endpoint", f"/{span_id}"),
        "status_code": status,
    }
    row.update(extra)
    return row


def rel(sections):
    return [(s.span_id, s.start_ms - T0, s.end_ms - T0) for s in sections]


# A 0-100 calls B 10-40 and C 50-90; C calls the database D 55-85.
BASIC = [
    span("A", None, 0, 100),
    span("B", "A", 10, 30),
    span("C", "A", 50, 40),
    span("D", "C", 55, 30),
]


def test_tree_order_depth_and_self_time():
    tree = build_tree(BASIC)
    assert tree.root_id == "A" and tree.order == ["A", "B", "C", "D"]
    assert [tree.spans[s].depth for s in tree.order] == [0, 1, 1, 2]
    assert self_times(tree) == {"A": 30.0, "B": 30.0, "C": 10.0, "D": 30.0}


def test_critical_path_is_jaegers_walk():
    sections = critical_path(build_tree(BASIC))
    # root -> last finishing child C -> D; back to C before D; back to A, B finished before C began
    assert rel(sections) == [
        ("A", 90, 100),
        ("C", 85, 90),
        ("D", 55, 85),
        ("C", 50, 55),
        ("A", 40, 50),
        ("B", 10, 40),
        ("A", 0, 10),
    ]
    assert sum(s.duration_ms for s in sections) == 100


def test_critical_path_skips_a_child_that_overlaps_the_later_one():
    # B 10-60 overlaps C 50-90: after C, the walk back needs a child that ended before 50: none
    tree = build_tree([span("A", None, 0, 100), span("B", "A", 10, 50), span("C", "A", 50, 40)])
    assert rel(critical_path(tree)) == [("A", 90, 100), ("C", 50, 90), ("A", 0, 50)]


def test_single_span_trace():
    tree = build_tree([span("only", None, 0, 42, status=503, error_message="boom")])
    assert tree.root_id == "only" and not tree.root.synthetic
    assert rel(critical_path(tree)) == [("only", 0, 42)]
    found = traces.analyse(tree)
    assert found.self_ms == {"only": 42.0}
    assert found.bottlenecks == [] and found.n_plus_one == [] and found.sequential == []
    assert found.error_origin.span_id == "only" and found.error_origin.error_message == "boom"


def test_orphans_hang_under_a_synthetic_root_spanning_the_trace():
    tree = build_tree(
        [
            span("A", None, 0, 50),
            span("X", "missing", 70, 20),  # its parent was never seen
            span("Y", "X", 75, 10),
        ]
    )
    root = tree.root
    assert root.synthetic and root.span_id == SYNTHETIC_ROOT_ID
    assert root.children == ["A", "X"] and tree.spans["X"].orphan and not tree.spans["A"].orphan
    assert (root.start_ms - T0, root.duration_ms) == (0, 90)
    assert [s.span_id for s in tree.real_spans()] == ["A", "X", "Y"]
    # the critical path runs through the orphan that finished last, then back to A
    assert rel(critical_path(tree)) == [
        ("X", 85, 90),
        ("Y", 75, 85),
        ("X", 70, 75),
        (SYNTHETIC_ROOT_ID, 50, 70),
        ("A", 0, 50),
    ]


def test_several_roots_get_one_synthetic_root():
    tree = build_tree([span("A", None, 0, 10), span("B", None, 20, 10)])
    assert tree.root.synthetic and tree.root.children == ["A", "B"]


def test_a_parent_cycle_does_not_loop():
    tree = build_tree([span("A", "B", 0, 10), span("B", "A", 2, 5)])
    assert sorted(s.span_id for s in tree.real_spans()) == ["A", "B"]
    assert len(tree.order) == 3  # synthetic root + both, each once


def test_clock_skew_centres_a_remote_child_and_moves_its_host():
    tree = build_tree(
        [
            span("A", None, 0, 100, service="front"),
            span("B", "A", 150, 40, service="back"),  # its clock runs 150 ms ahead: ends after A
            span("B2", "B", 160, 10, service="back"),  # same host: moves with B
            span("C", "B", 170, 10, service="db"),  # fits in the adjusted B? 170-120=50: no, own skew
        ]
    )
    b, b2 = tree.spans["B"], tree.spans["B2"]
    assert b.start_ms - T0 == 30 and b.skew_ms == -120  # centred: 0 + (100 - 40) / 2
    assert b2.start_ms - T0 == 40 and b2.skew_ms == -120
    c = tree.spans["C"]
    assert b.start_ms <= c.start_ms and c.end_ms <= b.end_ms


def test_siblings_are_ordered_and_judged_by_their_adjusted_starts():
    # "late" was recorded after "early2", but its clock runs ahead: it really ran between them
    tree = build_tree(
        [
            span("A", None, 0, 100, service="front"),
            span("early1", "A", 5, 10, service="front"),
            span("early2", "A", 60, 10, service="front"),
            span("late", "A", 300, 30, service="back"),  # centred: 35-65, overlapping early2
        ]
    )
    assert tree.spans["A"].children == ["early1", "late", "early2"]
    [run] = traces.sequential_calls(tree)
    assert run.span_ids == ("early1", "late")


def test_no_skew_for_a_fitting_child_a_longer_child_or_the_same_host():
    tree = build_tree(
        [
            span("A", None, 0, 100, service="front"),
            span("fits", "A", 10, 20, service="back"),
            span("longer", "A", 50, 150, service="other"),  # longer than its parent: left alone
            span("same", "A", 90, 30, service="front"),  # same host: its clock is the parent's
        ]
    )
    assert {s: tree.spans[s].skew_ms for s in ("fits", "longer", "same")} == {"fits": 0, "longer": 0, "same": 0}
    # for self time and the critical path an overflowing child is clamped to its parent
    assert self_times(tree)["A"] == pytest.approx(100 - 20 - 50)
    path = critical_path(tree)
    assert sum(s.duration_ms for s in path) == pytest.approx(100)
    assert all(s.start_ms >= T0 and s.end_ms <= T0 + 100 for s in path)


def test_host_attribute_is_the_clock():
    # two services on one host share a clock: no adjustment between them
    rows = [
        span("A", None, 0, 100, service="front", attributes={"host.name": "h1"}),
        span("B", "A", 150, 40, service="back", attributes='{"host.name": "h1"}'),
    ]
    assert build_tree(rows).spans["B"].skew_ms == 0


def test_bottlenecks_are_spans_with_over_a_fifth_of_the_trace_as_self_time():
    tree = build_tree(BASIC)  # self: A 30, B 30, C 10, D 30 of 100
    found = traces.bottlenecks(tree, self_times(tree))
    assert sorted(b.span_id for b in found) == ["A", "B", "D"]
    assert all(b.share == pytest.approx(0.3) for b in found)


def test_n_plus_one_and_sequential_siblings():
    rows = [span("root", None, 0, 200, service="api")]
    for i in range(5):  # five sequential queries of one statement, 10 ms each, 30 ms apart
        rows.append(
            span(
                f"q{i}",
                "root",
                10 + 30 * i,
                10,
                service="postgresql",
                endpoint="SELECT",
                attributes={"db.statement": "SELECT * FROM items WHERE id = ?"},
            )
        )
    rows.append(
        span("other", "root", 160, 20, service="postgresql", endpoint="SELECT", attributes={"db.statement": "SELECT 1"})
    )
    tree = build_tree(rows)
    [n1] = traces.n_plus_one(tree)
    assert (n1.parent_span_id, n1.calls, n1.target, n1.total_ms) == ("root", 5, "SELECT * FROM items WHERE id = ?", 50)
    [seq] = traces.sequential_calls(tree)
    assert seq.span_ids == ("q0", "q1", "q2", "q3", "q4", "other")
    assert seq.elapsed_ms == 170 and seq.parallel_ms == 20 and seq.saving_ms == 150


def test_overlapping_siblings_are_not_sequential():
    tree = build_tree([span("A", None, 0, 100), span("B", "A", 10, 50), span("C", "A", 20, 50), span("D", "A", 40, 10)])
    assert traces.sequential_calls(tree) == []
    assert traces.n_plus_one(tree) == []  # different endpoints


def test_error_origin_is_the_deepest_failure_with_healthy_children():
    tree = build_tree(
        [
            span("api", None, 0, 100, status=500),
            span("orders", "api", 10, 80, status=502),
            span("payments", "orders", 20, 50, status=503, error_message="card processor timeout"),
            span("fraud", "payments", 25, 10, status=200),
            span("cache", "api", 92, 3, status=500),  # fails too, but shallower
        ]
    )
    origin = traces.error_origin(tree)
    assert (origin.span_id, origin.depth, origin.error_message) == ("payments", 2, "card processor timeout")
    assert traces.error_origin(build_tree(BASIC)) is None


def test_rows_with_datetimes_and_missing_values():
    start = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    rows = [
        {"span_id": "a", "parent_span_id": None, "timestamp": start, "latency_ms": 20.0, "service": "s"},
        {
            "span_id": "b",
            "parent_span_id": "a",
            "timestamp": start + timedelta(milliseconds=5),
            "latency_ms": float("nan"),
            "service": "t",
            "status_code": float("nan"),
            "attributes": None,
        },
    ]
    tree = build_tree(rows)
    assert tree.spans["b"].start_ms - tree.spans["a"].start_ms == 5 and tree.spans["b"].duration_ms == 0
    assert tree.spans["b"].status_code is None
    with pytest.raises(ValueError):
        build_tree([])


def test_critical_path_sections_cover_the_root_exactly():
    # a wider tree: the sections never overlap and add up to the root's duration
    rows = [span("r", None, 0, 300)]
    for i in range(6):
        rows.append(span(f"c{i}", "r", 20 * i, 60 + 7 * i, service=f"s{i % 3}"))
        rows.append(span(f"g{i}", f"c{i}", 20 * i + 5, 30, service=f"s{i % 3}"))
    sections = sorted(critical_path(build_tree(rows)), key=lambda s: s.start_ms)
    assert sum(s.duration_ms for s in sections) == pytest.approx(300)
    assert all(a.end_ms <= b.start_ms + 1e-9 for a, b in zip(sections, sections[1:], strict=False))
    assert isinstance(sections[0], Section)
