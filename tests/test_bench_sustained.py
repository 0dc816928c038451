"""The sustained bench's own arithmetic: request patching, the lag, the checkpoint read.

A wrong lag or a patch that breaks the protobuf would make bench/bench_sustained.py
report figures that look plausible and mean nothing, so these run in the suite
(no processes started; well under a second).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_sustained as bench  # noqa: E402


@pytest.fixture(scope="module")
def requests():
    base_ns = time.time_ns()
    bodies = bench.build_requests(2, base_ns)
    return bodies, bench.find_patches(bodies)


def _spans(body: bytes):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(body)
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_patched_requests_decode_with_new_ids_and_times(requests):
    bodies, patches = requests
    bench.check_patching(bodies, patches)  # raises when a field moved or the body broke
    patcher = bench.Patcher(bodies, patches)
    a, b = _spans(patcher.body(0, 1, 0)), _spans(patcher.body(2, 2, 5 * 10**9))  # same template, later
    assert len(a) == len(b) == bench.SPANS_PER_REQUEST
    # the job de-duplicates by event_id (trace id's low half + span id): no repeats across requests
    ids = {(s.trace_id[8:], s.span_id) for s in a} | {(s.trace_id[8:], s.span_id) for s in b}
    assert len(ids) == 2 * bench.SPANS_PER_REQUEST
    assert [y.start_time_unix_nano - x.start_time_unix_nano for x, y in zip(a, b, strict=True)] == [5 * 10**9] * len(a)
    # parent links still point at spans of the same request
    by_id = {s.span_id: s for s in b}
    parents = [s.parent_span_id for s in b if s.parent_span_id]
    assert parents and all(p in by_id for p in parents)
    assert len({s.trace_id for s in b}) == bench.SPANS_PER_REQUEST // bench.SPANS_PER_TRACE


def test_lag_is_the_age_of_the_oldest_uncommitted_span():
    pub = bench.Published()
    pub.add(100.0, {"0": 0, "1": 0})
    pub.add(102.0, {"0": 100, "1": 10})
    pub.add(104.0, {"0": 200, "1": 10})
    ends = {"0": 200, "1": 10}
    # partition 0: offset 50 (the 51st record) was published at 100 + 51/100 * 2 s
    assert pub.lag(105.0, ends, {"0": 50, "1": 10}) == pytest.approx(105.0 - 101.02)
    # the worst partition counts: partition 1 has not committed offset 0, published by 102
    assert pub.lag(105.0, ends, {"0": 200, "1": 0}) == pytest.approx(105.0 - 100.2)
    assert pub.lag(105.0, ends, {"0": 200, "1": 10}) == 0.0


def test_committed_offsets_come_from_the_last_committed_batch(tmp_path):
    cp = tmp_path / "metrics"
    (cp / "commits").mkdir(parents=True)
    (cp / "offsets").mkdir()
    for batch, offsets in ((0, {"0": 5, "1": 7}), (1, {"0": 9, "1": 12}), (2, {"0": 30, "1": 40})):
        (cp / "offsets" / str(batch)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{json.dumps(offsets)}\n')
    assert bench.checkpoint_offsets(cp) == {}
    (cp / "commits" / "0").write_text("v1\n{}\n")
    (cp / "commits" / "1").write_text("v1\n{}\n")
    assert bench.checkpoint_offsets(cp) == {"0": 9, "1": 12}  # batch 2 planned, not committed
