"""The three OTLP signals: their request/response messages, mapping and topic, shared by HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb

from ingest import mapping
from observability.settings import Settings


@dataclass(frozen=True)
class Signal:
    name: str  # traces | logs | metrics
    path: str  # OTLP/HTTP path
    grpc_service: str  # fully qualified gRPC service name
    request_type: type[Message]
    response_type: type[Message]
    map: Callable[..., mapping.Mapped]
    topic_of: Callable[[Settings], str]
    rejected_field: str  # the partial_success counter
    noun: str  # what the error message counts

    def response(self, mapped: mapping.Mapped | None) -> Message:
        """Empty response when all was accepted; partial_success when some items were rejected."""
        resp = self.response_type()
        if mapped is not None and mapped.rejected:
            setattr(resp.partial_success, self.rejected_field, mapped.rejected)
            resp.partial_success.error_message = mapped.error_message(self.noun)
        return resp


TRACES = Signal(
    "traces",
    "/v1/traces",
    "opentelemetry.proto.collector.trace.v1.TraceService",
    trace_pb.ExportTraceServiceRequest,
    trace_pb.ExportTraceServiceResponse,
    mapping.map_traces,
    lambda s: s.raw_events_topic,
    "rejected_spans",
    "spans",
)
LOGS = Signal(
    "logs",
    "/v1/logs",
    "opentelemetry.proto.collector.logs.v1.LogsService",
    logs_pb.ExportLogsServiceRequest,
    logs_pb.ExportLogsServiceResponse,
    mapping.map_logs,
    lambda s: s.logs_topic,
    "rejected_log_records",
    "log records",
)
METRICS = Signal(
    "metrics",
    "/v1/metrics",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    metrics_pb.ExportMetricsServiceRequest,
    metrics_pb.ExportMetricsServiceResponse,
    mapping.map_metrics,
    lambda s: s.metrics_topic,
    "rejected_data_points",
    "data points",
)
SIGNALS = (TRACES, LOGS, METRICS)
