"""Event schema validation: every kind of bad line is rejected with a reason naming the field."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from observability.schema import (
    MAX_LINE_BYTES,
    InvalidEvent,
    TimestampFormatter,
    format_timestamp,
    validate_event,
    validate_line,
)
from tests.event_samples import BAD_LINES, NOW_MS, good_event, good_line


@pytest.mark.parametrize("kind,raw,field", BAD_LINES, ids=[k for k, _, _ in BAD_LINES])
def test_bad_line_rejected_with_reason_naming_the_field(kind, raw, field):
    with pytest.raises(InvalidEvent) as exc:
        validate_line(raw, now_ms=NOW_MS)
    assert field in str(exc.value), f"{kind}: reason {exc.value!r} does not name {field!r}"


def test_at_least_twelve_kinds_of_bad_line():
    assert len({kind for kind, _, _ in BAD_LINES}) >= 12


def test_valid_event_round_trips():
    ev = validate_line(good_line(3), now_ms=NOW_MS)
    assert ev.service == "inventory" and ev.status_code == 200 and ev.latency_ms == 15.5
    again = validate_line(ev.to_json(), now_ms=NOW_MS)
    assert again == ev


def test_optional_fields_default_and_event_id_is_generated():
    minimal = {"timestamp": "2024-05-01T10:00:00Z", "service": "checkout", "status_code": 201, "latency_ms": 0}
    a, b = validate_event(minimal, now_ms=NOW_MS), validate_event(minimal, now_ms=NOW_MS)
    assert len(a.event_id) == 32 and int(a.event_id, 16) >= 0
    assert a.event_id != b.event_id
    assert a.endpoint == "unknown" and a.trace_id is None and a.parent_span_id is None and a.attributes is None


def test_timestamps_iso_with_offset_and_epoch_ms_agree():
    iso = validate_event(good_event(1, ts_ms=None, timestamp="2024-05-01T12:00:00.250+02:00"), now_ms=NOW_MS)
    ms = int(datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC).timestamp() * 1000)
    epoch = validate_event(good_event(1, ts_ms=ms), now_ms=NOW_MS)
    naive = validate_event(good_event(1, timestamp="2024-05-01T10:00:00.250"), now_ms=NOW_MS)
    assert iso.timestamp_ms == epoch.timestamp_ms == naive.timestamp_ms == ms
    assert json.loads(iso.to_json())["timestamp"] == "2024-05-01T10:00:00.250Z"


def test_boundaries_are_accepted():
    for status in (100, 599):
        assert validate_event(good_event(1, status_code=status), now_ms=NOW_MS).status_code == status
    assert validate_event(good_event(1, latency_ms=0), now_ms=NOW_MS).latency_ms == 0.0
    soon = NOW_MS + 23 * 3_600_000
    assert validate_event(good_event(1, ts_ms=soon), now_ms=NOW_MS).timestamp_ms == soon
    big = good_line(1, attributes={"blob": "x" * (MAX_LINE_BYTES - 600)})
    assert len(big) <= MAX_LINE_BYTES
    validate_line(big, now_ms=NOW_MS)


def test_ids_are_normalised_to_lower_case_hex():
    ev = validate_event(good_event(1, trace_id="AB" * 16, span_id="CD" * 8), now_ms=NOW_MS)
    assert ev.trace_id == "ab" * 16 and ev.span_id == "cd" * 8


def test_span_kind_is_optional_defaults_to_server_and_is_checked():
    base = {"timestamp": "2024-05-01T10:00:00Z", "service": "checkout", "status_code": 200, "latency_ms": 1}
    assert validate_event(base, now_ms=NOW_MS).kind == "server"  # generator lines and older files
    for kind in ("server", "client", "internal", "producer", "consumer"):
        assert validate_event({**base, "kind": kind}, now_ms=NOW_MS).kind == kind
    ev = validate_event({**base, "kind": "CONSUMER"}, now_ms=NOW_MS)
    assert ev.kind == "consumer" and json.loads(ev.to_json())["kind"] == "consumer"
    for bad in ("unspecified", "", 2, ["server"]):
        with pytest.raises(InvalidEvent, match="^kind: must be one of server, client"):
            validate_event({**base, "kind": bad}, now_ms=NOW_MS)


def test_timestamp_formatter_agrees_with_format_timestamp_across_interleaved_seconds(monkeypatch):
    # A request's spans interleave seconds; the formatter keeps one prefix per second and
    # starts over past MAX_SECONDS (shrunk here so the run crosses it several times).
    monkeypatch.setattr(TimestampFormatter, "MAX_SECONDS", 7)
    rng = random.Random(11)
    fmt = TimestampFormatter()
    base = 1_764_547_199_000  # a day boundary (2025-11-30T23:59:59) inside the range
    stamps = [base + rng.randrange(-3_000, 30_000) for _ in range(5_000)] + [0, 999, 1000, 253_402_300_799_999]
    assert [fmt(ms) for ms in stamps] == [format_timestamp(ms) for ms in stamps]
