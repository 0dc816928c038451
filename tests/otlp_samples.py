"""Hand-built OTLP requests for the receiver's raw-request tests (what an SDK could send, good and bad)."""

from __future__ import annotations

import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

NOW_NS = (int(time.time()) - 60) * 1_000_000_000
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")


def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    else:
        v = AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def span(
    name: str = "GET /x",
    *,
    trace_id: bytes = TRACE,
    span_id: bytes = SPAN,
    parent: bytes = b"",
    start: int = NOW_NS,
    duration_ns: int = 25_000_000,
    kind: int = Span.SPAN_KIND_SERVER,
    status_code: int = 0,
    status_message: str = "",
    **attrs,
) -> Span:
    s = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        status=Status(code=status_code, message=status_message),
    )
    s.attributes.extend(kv(k.replace("__", "."), v) for k, v in attrs.items())
    return s


def traces(*spans: Span, service: str | None = "shop") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if service is not None:
        rs.resource.attributes.append(kv("service.name", service))
    rs.scope_spans.add().spans.extend(spans)
    return req


def logs(*records: dict, service: str = "shop") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", service))
    sl = rl.scope_logs.add()
    for r in records:
        rec = sl.log_records.add(
            time_unix_nano=r.get("time", NOW_NS),
            severity_number=r.get("severity_number", 9),
            severity_text=r.get("severity_text", "INFO"),
            trace_id=r.get("trace_id", TRACE),
            span_id=r.get("span_id", SPAN),
        )
        rec.body.string_value = r.get("body", "hello")
    return req


def metrics(service: str = "shop") -> ExportMetricsServiceRequest:
    """One gauge point (good), one gauge point with NaN, one sum point, one histogram point, one summary point."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", service))
    sm = rm.scope_metrics.add()
    g = sm.metrics.add(name="queue.depth", unit="1")
    g.gauge.data_points.add(time_unix_nano=NOW_NS, as_int=7)
    g.gauge.data_points.add(time_unix_nano=NOW_NS, as_double=float("nan"))
    s = sm.metrics.add(name="requests", unit="1")
    s.sum.aggregation_temporality = 2
    s.sum.is_monotonic = True
    s.sum.data_points.add(time_unix_nano=NOW_NS, as_double=42.0)
    h = sm.metrics.add(name="latency", unit="ms")
    h.histogram.aggregation_temporality = 1
    h.histogram.data_points.add(
        time_unix_nano=NOW_NS, count=6, sum=123.5, explicit_bounds=[10, 100], bucket_counts=[1, 4, 1]
    )
    q = sm.metrics.add(name="legacy.summary")
    q.summary.data_points.add(time_unix_nano=NOW_NS, count=1, sum=2.0)
    return req
