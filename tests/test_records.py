"""The logs and metrics topic contract: one verdict per record, reasons naming the field."""

import pytest

from observability.records import (
    UNKNOWN_SERVICE,
    record_to_json,
    validate_log_line,
    validate_log_record,
    validate_metric_point,
)
from observability.schema import InvalidEvent

TS = "2026-03-02T10:00:00.250Z"


def test_log_record_round_trips_through_the_wire_form():
    row = validate_log_record(
        {
            "timestamp": TS,
            "service": "cart",
            "severity_text": "ERROR",
            "severity_number": 17,
            "body": {"msg": "boom"},
            "trace_id": "AB" * 16,
            "span_id": "cd" * 8,
            "attributes": {"k": 1},
        }
    )
    assert row["body"] == '{"msg":"boom"}'
    assert row["trace_id"] == "ab" * 16
    assert validate_log_line(record_to_json(row)) == row


def test_log_record_defaults_and_null_ids():
    row = validate_log_record({"timestamp": TS, "trace_id": "0" * 32, "span_id": ""})
    assert row["service"] == UNKNOWN_SERVICE
    assert row["trace_id"] is None and row["span_id"] is None


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"service": "a"}, "timestamp"),
        ({"timestamp": TS, "severity_number": 99}, "severity_number"),
        ({"timestamp": TS, "trace_id": "abc"}, "trace_id"),
        ({"timestamp": TS, "attributes": [1]}, "attributes"),
    ],
)
def test_bad_log_records_name_the_field(obj, field):
    with pytest.raises(InvalidEvent, match=f"^{field}:"):
        validate_log_record(obj)


def test_histogram_point_checks_its_buckets():
    good = {
        "timestamp": TS,
        "service": "cart",
        "name": "http.server.duration",
        "kind": "histogram",
        "unit": "ms",
        "count": 3,
        "sum": 12.5,
        "bucket_bounds": [5.0, 10.0],
        "bucket_counts": [1, 1, 1],
    }
    assert validate_metric_point(good)["bucket_counts"] == [1, 1, 1]
    for change, field in [
        ({"bucket_counts": [1, 1]}, "bucket_counts"),
        ({"bucket_bounds": [10.0, 5.0]}, "bucket_bounds"),
        ({"count": 4}, "bucket_counts"),
        ({"sum": float("nan")}, "sum"),
    ]:
        with pytest.raises(InvalidEvent, match=f"^{field}:"):
            validate_metric_point({**good, **change})


def test_gauge_needs_a_finite_value_and_a_known_kind():
    assert validate_metric_point({"timestamp": TS, "name": "q", "kind": "gauge", "value": 2})["value"] == 2.0
    with pytest.raises(InvalidEvent, match="^value:"):
        validate_metric_point({"timestamp": TS, "name": "q", "kind": "sum"})
    with pytest.raises(InvalidEvent, match="^kind:"):
        validate_metric_point({"timestamp": TS, "name": "q", "kind": "summary", "value": 1})
