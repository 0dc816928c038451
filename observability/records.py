"""OTLP log records and metric points: the wire contract of the logs and metrics topics.

Spans need no contract of their own: the OTLP receiver maps each span onto the
telemetry event of `observability.schema` (raw-events topic). Log records and
metric data points have no such home, so they travel as one JSON object each on
`KAFKA_LOGS_TOPIC` and `KAFKA_METRICS_TOPIC`, and land in the DuckDB tables
`logs` and `otel_metrics` with exactly these columns (`LOG_FIELDS`,
`METRIC_FIELDS`).

Like `validate_event`, each validator is the one judge of a record wherever it
is checked (the receiver before publishing, the Spark job before the sink), so
both reject the same records with the same reason, naming the field.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from typing import Any

from observability.columns import Column, names
from observability.schema import InvalidEvent, decode_line, format_timestamp, parse_timestamp

# The one definition of each record's fields and types (`observability.columns`):
# the DuckDB tables, the Spark job's stream schema and its Arrow batches follow it.
LOG_COLUMNS = (
    Column("timestamp", "timestamp"),
    Column("service", "string"),
    Column("severity_text", "string"),
    Column("severity_number", "int"),
    Column("body", "string"),
    Column("trace_id", "string"),
    Column("span_id", "string"),
    Column("attributes", "json"),
)
METRIC_COLUMNS = (
    Column("timestamp", "timestamp"),
    Column("service", "string"),
    Column("name", "string"),
    Column("kind", "string"),
    Column("unit", "string"),
    Column("value", "double"),
    Column("count", "bigint"),
    Column("sum", "double"),
    Column("bucket_bounds", "double[]"),
    Column("bucket_counts", "bigint[]"),
    Column("attributes", "json"),
)
LOG_FIELDS = names(LOG_COLUMNS)
METRIC_FIELDS = names(METRIC_COLUMNS)
# OTLP metric data kinds the platform stores (exponential histograms and summaries
# are rejected with a reason until a consumer needs them).
METRIC_KINDS = ("gauge", "sum", "histogram")
UNKNOWN_SERVICE = "unknown_service"  # what the OpenTelemetry SDKs report without service.name


def _service(obj: dict) -> str:
    service = obj.get("service")
    if service is None:
        return UNKNOWN_SERVICE
    if not isinstance(service, str):
        raise InvalidEvent(f"service: must be a string, got {type(service).__name__}")
    return service.strip() or UNKNOWN_SERVICE


def _hex_id(obj: dict, field: str, digits: int) -> str | None:
    value = obj.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: must be a string of {digits} hex digits, got {type(value).__name__}")
    value = value.lower()
    if len(value) != digits or any(c not in "0123456789abcdef" for c in value):
        raise InvalidEvent(f"{field}: must be {digits} hex digits")
    if value == "0" * digits:
        return None  # OTLP's "no id"
    return value


def _attributes(obj: dict) -> dict | None:
    attrs = obj.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        raise InvalidEvent(f"attributes: must be an object, got {type(attrs).__name__}")
    return attrs or None


def _finite(obj: dict, field: str) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(f"{field}: must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidEvent(f"{field}: must be finite")
    return value


def _count(obj: dict, field: str) -> int | None:
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(f"{field}: must be a non-negative integer")
    if value >= 2**63:  # stored as BIGINT
        raise InvalidEvent(f"{field}: must be below 2^63")
    return value


def validate_log_record(obj: Any, *, now_ms: int | None = None) -> dict[str, Any]:
    """A decoded logs-topic value -> the `logs` row (timestamp as epoch ms), or InvalidEvent."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"log: must be a JSON object, got {type(obj).__name__}")
    if obj.get("timestamp") is None:
        raise InvalidEvent("timestamp: required field missing")
    severity_number = obj.get("severity_number")
    if severity_number is not None and (
        isinstance(severity_number, bool) or not isinstance(severity_number, int) or not 0 <= severity_number <= 24
    ):
        raise InvalidEvent("severity_number: must be an integer 0-24")
    severity_text = obj.get("severity_text")
    if severity_text is not None and not isinstance(severity_text, str):
        raise InvalidEvent(f"severity_text: must be a string, got {type(severity_text).__name__}")
    body = obj.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return {
        "timestamp": parse_timestamp(obj["timestamp"], now_ms=now_ms),
        "service": _service(obj),
        "severity_text": severity_text or None,
        "severity_number": severity_number,
        "body": body,
        "trace_id": _hex_id(obj, "trace_id", 32),
        "span_id": _hex_id(obj, "span_id", 16),
        "attributes": _attributes(obj),
    }


def validate_metric_point(obj: Any, *, now_ms: int | None = None) -> dict[str, Any]:
    """A decoded metrics-topic value -> the `otel_metrics` row (timestamp as epoch ms), or InvalidEvent.

    gauge and sum points carry `value`; histogram points carry `count`, `sum` and
    matching buckets (len(bucket_counts) == len(bucket_bounds) + 1, bounds increasing).
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"metric: must be a JSON object, got {type(obj).__name__}")
    if obj.get("timestamp") is None:
        raise InvalidEvent("timestamp: required field missing")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidEvent("name: must be a non-empty string")
    kind = obj.get("kind")
    if kind not in METRIC_KINDS:
        raise InvalidEvent(f"kind: must be one of {', '.join(METRIC_KINDS)}, got {kind!r}")
    unit = obj.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise InvalidEvent(f"unit: must be a string, got {type(unit).__name__}")
    row = {
        "timestamp": parse_timestamp(obj["timestamp"], now_ms=now_ms),
        "service": _service(obj),
        "name": name.strip(),
        "kind": kind,
        "unit": unit or None,
        "value": _finite(obj, "value"),
        "count": _count(obj, "count"),
        "sum": _finite(obj, "sum"),
        "bucket_bounds": None,
        "bucket_counts": None,
        "attributes": _attributes(obj),
    }
    if kind == "histogram":
        if row["count"] is None:
            raise InvalidEvent("count: required for a histogram point")
        bounds, counts = obj.get("bucket_bounds") or [], obj.get("bucket_counts") or []
        if not isinstance(bounds, list) or not isinstance(counts, list):
            raise InvalidEvent("bucket_bounds: bucket_bounds and bucket_counts must be arrays")
        row["bucket_bounds"] = [_finite({"bucket_bounds": b}, "bucket_bounds") for b in bounds]
        row["bucket_counts"] = [_count({"bucket_counts": c}, "bucket_counts") for c in counts]
        if None in row["bucket_bounds"] or None in row["bucket_counts"]:
            raise InvalidEvent("bucket_bounds: null bucket")
        if counts and len(counts) != len(bounds) + 1:
            raise InvalidEvent("bucket_counts: must have one more entry than bucket_bounds")
        if any(lo >= hi for lo, hi in pairwise(row["bucket_bounds"])):
            raise InvalidEvent("bucket_bounds: must be strictly increasing")
        if counts and sum(row["bucket_counts"]) != row["count"]:
            raise InvalidEvent("bucket_counts: must add up to count")
    elif row["value"] is None:
        raise InvalidEvent(f"value: required for a {kind} point")
    return row


def validate_log_line(raw: bytes | str, *, now_ms: int | None = None) -> dict[str, Any]:
    return validate_log_record(decode_line(raw), now_ms=now_ms)


def validate_metric_line(raw: bytes | str, *, now_ms: int | None = None) -> dict[str, Any]:
    return validate_metric_point(decode_line(raw), now_ms=now_ms)


def record_to_json(row: dict[str, Any]) -> bytes:
    """A validated row -> its topic value (the timestamp back in the wire form)."""
    out = dict(row)
    out["timestamp"] = format_timestamp(row["timestamp"])
    return json.dumps(out, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
