"""OTLP export requests -> topic records (spans, log records, metric points).

Every item is mapped on its own: one that cannot be mapped (a bad id length,
an end before its start, a non-finite value, a kind the platform does not
store) is rejected with an English reason and becomes a dead letter, and the
rest of the request is still published. Spans become telemetry events
(`observability.schema`), log records and metric points the rows of
`observability.records`; each is judged by that module's validator, the same
judge the Spark job uses. The README's "Sending OpenTelemetry data" section
documents this mapping as a table.

Span mapping is the receiver's hot path (50,000 spans/s is the goal), so it
reads each protobuf field once and builds the JSON with orjson.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.otlp_json import to_dict
from observability.dead_letter import make_dead_letter
from observability.records import UNKNOWN_SERVICE, record_to_json, validate_log_record, validate_metric_point
from observability.schema import MAX_FUTURE, MAX_LINE_BYTES, InvalidEvent, TimestampFormatter

SOURCE_TRACES, SOURCE_LOGS, SOURCE_METRICS = "otlp:traces", "otlp:logs", "otlp:metrics"
# OTLP SpanKind -> the event's `kind`; UNSPECIFIED is read as INTERNAL, as the spec allows.
SPAN_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_CODE_ERROR = 2
TEMPORALITY = {0: "unspecified", 1: "delta", 2: "cumulative"}
MAX_REASONS_IN_MESSAGE = 5
_MAX_FUTURE_MS = int(MAX_FUTURE.total_seconds() * 1000)
_ZERO_TRACE, _ZERO_SPAN = bytes(16), bytes(8)


class Reject(ValueError):
    """This item cannot be mapped; `str(exc)` is the reason."""


@dataclass
class Mapped:
    """What one request turned into: records to publish and the rejects (already dead letters)."""

    records: list[tuple[str, bytes | None, bytes, int]] = field(default_factory=list)  # (topic, key, value, ts_ms)
    dead_letters: list[bytes] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    accepted: int = 0

    @property
    def rejected(self) -> int:
        return len(self.dead_letters)

    def reject(self, source: str, reason: str, payload: dict[str, Any]) -> None:
        self.reasons.append(reason)
        try:
            body = orjson.dumps(payload)
        except TypeError:
            body = repr(payload).encode()
        self.dead_letters.append(make_dead_letter(source, reason, body))

    def error_message(self, noun: str) -> str:
        """English summary for partial_success: how many were rejected and the first distinct reasons."""
        if not self.reasons:
            return ""
        distinct = list(dict.fromkeys(self.reasons))
        shown = "; ".join(distinct[:MAX_REASONS_IN_MESSAGE])
        more = (
            f" (and {len(distinct) - MAX_REASONS_IN_MESSAGE} more reasons)"
            if len(distinct) > MAX_REASONS_IN_MESSAGE
            else ""
        )
        total = self.accepted + self.rejected
        return f"{self.rejected} of {total} {noun} rejected: {shown}{more}"


# -- attribute values ------------------------------------------------------------------
def any_value(v) -> Any:
    """An OTLP AnyValue -> a JSON value (bytes as base64, non-finite doubles as strings)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        d = v.double_value
        return d if math.isfinite(d) else str(d)
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


_PLAIN = frozenset({"string_value", "int_value", "bool_value"})


def attributes(kvs) -> dict[str, Any]:
    """OTLP KeyValues -> a dict; the common scalar cases inline (this runs for every span).

    A non-empty string, the commonest value, is read without `WhichOneof` (an unset or other
    value reads as ""): ~15% of this function's time on typical spans."""
    out = {}
    for kv in kvs:
        v = kv.value
        text = v.string_value
        if text:
            out[kv.key] = text
            continue
        which = v.WhichOneof("value")
        out[kv.key] = getattr(v, which) if which in _PLAIN else any_value(v)
    return out


def service_of(resource_attrs: dict[str, Any]) -> str:
    name = resource_attrs.get("service.name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    return UNKNOWN_SERVICE


def _check_ids(trace_id: bytes, span_id: bytes, parent: bytes) -> None:
    if len(trace_id) != 16:
        raise Reject(f"trace_id: must be 16 bytes, got {len(trace_id)}")
    if trace_id == _ZERO_TRACE:
        raise Reject("trace_id: all zeros is not a valid trace id")
    if len(span_id) != 8:
        raise Reject(f"span_id: must be 8 bytes, got {len(span_id)}")
    if span_id == _ZERO_SPAN:
        raise Reject("span_id: all zeros is not a valid span id")
    if len(parent) not in (0, 8):
        raise Reject(f"parent_span_id: must be empty or 8 bytes, got {len(parent)}")


def _status_code(span_attrs: dict[str, Any], status_code: int) -> int:
    code = span_attrs.get("http.response.status_code")
    if code is None:
        code = span_attrs.get("http.status_code")
    if code is None:
        return 500 if status_code == STATUS_CODE_ERROR else 200
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int):
        raise Reject(f"http.response.status_code: must be an integer, got {code!r:.40}")
    if not 100 <= code <= 599:
        raise Reject(f"http.response.status_code: {code} outside 100-599")
    return code


def _endpoint(span_attrs: dict[str, Any], name: str) -> str:
    route = span_attrs.get("http.route")
    if route:
        method = span_attrs.get("http.request.method") or span_attrs.get("http.method")
        return f"{method} {route}" if method else str(route)
    return name


def _error_message(span, message: str) -> str | None:
    if message:
        return message
    events = span.events
    if not events:
        return None
    for ev in events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.message":
                    text = any_value(kv.value)
                    return text if isinstance(text, str) else orjson.dumps(text).decode()
    return None


def event_id(trace_hex: str, span_hex: str) -> str:
    """Deterministic from the span's identity, so a retried export is de-duplicable downstream.

    32 hex digits like the generator's ids: the trace id's low 64 bits (its random
    part in W3C and X-Ray ids alike) and the span id. Cheaper than a hash, which
    cost ~15% of the per-span mapping time."""
    return trace_hex[16:] + span_hex


# -- spans --------------------------------------------------------------------------
def map_traces(request, topic: str, *, now_ms: int | None = None) -> Mapped:
    """ExportTraceServiceRequest -> one raw-events record per span (key = trace id hex, as the generator)."""
    out = Mapped()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    latest_ms = now_ms + _MAX_FUTURE_MS
    fmt = TimestampFormatter()
    append = out.records.append
    for rs in request.resource_spans:
        res_attrs = attributes(rs.resource.attributes)
        service = service_of(res_attrs)
        for ss in rs.scope_spans:
            for span in ss.spans:
                try:
                    key, value, ts_ms = _map_span(span, service, res_attrs, fmt, latest_ms)
                except Reject as exc:
                    out.reject(SOURCE_TRACES, str(exc), {"service": service, "span": to_dict(span)})
                    continue
                append((topic, key, value, ts_ms))
    out.accepted = len(out.records)
    return out


def _map_span(span, service: str, res_attrs: dict, fmt: TimestampFormatter, latest_ms: int):
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    _check_ids(trace_id, span_id, parent)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start == 0:
        raise Reject("start_time_unix_nano: missing")
    if end < start:
        raise Reject("end_time_unix_nano: before start_time_unix_nano")
    ts_ms = start // 1_000_000
    if ts_ms > latest_ms:
        raise Reject("start_time_unix_nano: more than a day in the future")
    span_attrs = attributes(span.attributes)
    status = span.status
    kind = SPAN_KINDS.get(span.kind, "internal")
    attrs = {**res_attrs, **span_attrs, "span.kind": kind}
    trace_hex, span_hex = trace_id.hex(), span_id.hex()
    event = {
        "event_id": event_id(trace_hex, span_hex),
        "timestamp": fmt(ts_ms),
        "service": service,
        "endpoint": _endpoint(span_attrs, span.name),
        "status_code": _status_code(span_attrs, status.code),
        "latency_ms": (end - start) / 1e6,
        "trace_id": trace_hex,
        "span_id": span_hex,
        "parent_span_id": parent.hex() if parent else None,
        "error_message": _error_message(span, status.message),
        "attributes": attrs,
        "kind": kind,
    }
    try:
        value = orjson.dumps(event)
    except TypeError as exc:  # e.g. an integer beyond 64 bits inside an attribute
        raise Reject(f"attributes: {exc}") from None
    _check_size(value, "span")
    return trace_hex.encode(), value, ts_ms


def _check_size(value: bytes, what: str) -> None:
    """The schema's line limit: a larger record would be a dead letter downstream, and too big for Kafka."""
    if len(value) > MAX_LINE_BYTES:
        raise Reject(f"{what}: {len(value)} bytes as JSON exceeds the {MAX_LINE_BYTES}-byte limit")


# -- logs ---------------------------------------------------------------------------
def map_logs(request, topic: str, *, now_ms: int | None = None) -> Mapped:
    """ExportLogsServiceRequest -> one logs-topic record per log record (key = trace id, else service)."""
    out = Mapped()
    for rl in request.resource_logs:
        res_attrs = attributes(rl.resource.attributes)
        service = service_of(res_attrs)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                try:
                    out.records.append(_map_log(rec, service, res_attrs, topic, now_ms))
                except (Reject, InvalidEvent) as exc:
                    out.reject(SOURCE_LOGS, str(exc), {"service": service, "logRecord": to_dict(rec)})
    out.accepted = len(out.records)
    return out


def _optional_id(raw: bytes, name: str, size: int) -> str | None:
    if not raw:
        return None
    if len(raw) != size:
        raise Reject(f"{name}: must be {size} bytes, got {len(raw)}")
    return raw.hex()


def _map_log(rec, service: str, res_attrs: dict, topic: str, now_ms: int | None):
    ts_ns = rec.time_unix_nano or rec.observed_time_unix_nano
    if ts_ns == 0:
        raise Reject("time_unix_nano: missing (and no observed_time_unix_nano)")
    trace_id = _optional_id(rec.trace_id, "trace_id", 16)
    obj = {
        "timestamp": ts_ns // 1_000_000,
        "service": service,
        "severity_text": rec.severity_text or None,
        "severity_number": rec.severity_number or None,
        "body": any_value(rec.body) if rec.HasField("body") else None,
        "trace_id": trace_id,
        "span_id": _optional_id(rec.span_id, "span_id", 8),
        "attributes": {**res_attrs, **attributes(rec.attributes)},
    }
    row = validate_log_record(obj, now_ms=now_ms)
    key = (row["trace_id"] or service).encode()
    value = record_to_json(row)
    _check_size(value, "log record")
    return topic, key, value, row["timestamp"]


# -- metrics ------------------------------------------------------------------------
def map_metrics(request, topic: str, *, now_ms: int | None = None) -> Mapped:
    """ExportMetricsServiceRequest -> one metrics-topic record per data point (key = service and name)."""
    out = Mapped()
    for rm in request.resource_metrics:
        res_attrs = attributes(rm.resource.attributes)
        service = service_of(res_attrs)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _map_metric(metric, service, res_attrs, topic, now_ms, out)
    out.accepted = len(out.records)
    return out


def _map_metric(metric, service: str, res_attrs: dict, topic: str, now_ms: int | None, out: Mapped) -> None:
    data = metric.WhichOneof("data")
    if data is None:
        return
    container = getattr(metric, data)
    extra: dict[str, Any] = {}
    if data in ("sum", "histogram", "exponential_histogram"):
        extra["metric.temporality"] = TEMPORALITY.get(container.aggregation_temporality, "unspecified")
    if data == "sum":
        extra["metric.monotonic"] = container.is_monotonic
    key = f"{service}/{metric.name}".encode()
    for point in container.data_points:
        try:
            if data in ("exponential_histogram", "summary"):
                raise Reject(f"{metric.name or 'metric'}: {data} points are not stored (gauge, sum and histogram are)")
            obj = _point(metric, data, point, service, {**res_attrs, **attributes(point.attributes), **extra})
            row = validate_metric_point(obj, now_ms=now_ms)
            value = record_to_json(row)
            _check_size(value, "data point")
        except (Reject, InvalidEvent) as exc:
            out.reject(
                SOURCE_METRICS,
                str(exc),
                {"service": service, "metric": metric.name, "kind": data, "dataPoint": to_dict(point)},
            )
            continue
        out.records.append((topic, key, value, row["timestamp"]))


def _point(metric, kind: str, point, service: str, attrs: dict) -> dict[str, Any]:
    if point.time_unix_nano == 0:
        raise Reject(f"{metric.name or 'metric'}: time_unix_nano missing")
    obj: dict[str, Any] = {
        "timestamp": point.time_unix_nano // 1_000_000,
        "service": service,
        "name": metric.name,
        "kind": kind,
        "unit": metric.unit or None,
        "attributes": attrs,
    }
    if kind == "histogram":
        obj["count"] = point.count
        obj["sum"] = point.sum if point.HasField("sum") else None
        obj["bucket_bounds"] = list(point.explicit_bounds)
        obj["bucket_counts"] = list(point.bucket_counts)
    else:
        which = point.WhichOneof("value")
        if which is None:
            raise Reject(f"{metric.name or 'metric'}: data point without a value")
        obj["value"] = getattr(point, which)
    return obj
