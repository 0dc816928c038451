"""`--otlp URL`: send the generator's spans through an OTLP receiver with the official SDK's exporter.

Each generated event becomes an SDK `ReadableSpan` with the event's own ids,
times, service (resource `service.name`), route and status, and is exported in
batches of 512 by `OTLPSpanExporter` (OTLP/HTTP protobuf), so the platform
eats the real protocol end to end (`make local`). The receiver maps it back to
the same event (`ingest/mapping.py`): endpoint from `http.method` + `http.route`
or the span name, `status_code` from `http.response.status_code`,
`error_message` from the span status. Spans are SERVER spans, like every
generator event. Dead letters (replay rejects) have no OTLP form: they are
counted and logged, not sent.

An export the SDK could not deliver (its own retries on 503 included) is retried
with backoff, like the transport sink: a receiver restart loses nothing.
"""

from __future__ import annotations

import json
import time

from observability.logs import get_logger
from observability.settings import Settings

log = get_logger(__name__)

BATCH_SPANS = 512
MAX_BACKOFF_S = 10.0


class OtlpSink:
    """A generator sink (send/flush/close) that exports spans over OTLP/HTTP."""

    def __init__(self, url: str, settings: Settings, *, batch: int = BATCH_SPANS) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = url.rstrip("/")
        endpoint = base if base.endswith("/v1/traces") else base + "/v1/traces"
        self.exporter = OTLPSpanExporter(endpoint=endpoint)
        self.events_topic = settings.raw_events_topic
        self.dead_letter_topic = settings.dead_letter_topic
        self.target = f"otlp:{endpoint}"
        self.batch = batch
        self.dead_letters_dropped = 0
        self._spans: list = []
        self._resources: dict = {}

    def send(self, topic: str, value: bytes, key: bytes | None, timestamp_ms: int | None) -> None:
        if topic != self.events_topic:
            self.dead_letters_dropped += 1
            return
        self._spans.append(self._span(json.loads(value), timestamp_ms))
        if len(self._spans) >= self.batch:
            self._export(self._spans[: self.batch])
            del self._spans[: self.batch]

    def flush(self) -> None:
        while self._spans:
            chunk = self._spans[: self.batch]
            self._export(chunk)
            del self._spans[: len(chunk)]

    def close(self) -> None:
        self.flush()
        self.exporter.shutdown()
        if self.dead_letters_dropped:
            log.warning("dead letters are not sent over OTLP", dropped=self.dead_letters_dropped)

    def _export(self, spans: list) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        delay = 0.2
        while self.exporter.export(spans) != SpanExportResult.SUCCESS:
            log.warning("OTLP export failed, retrying", target=self.target, spans=len(spans), retry_in_s=delay)
            time.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)

    def _resource(self, service: str):
        res = self._resources.get(service)
        if res is None:
            from opentelemetry.sdk.resources import Resource

            res = self._resources[service] = Resource.create({"service.name": service})
        return res

    def _span(self, ev: dict, timestamp_ms: int | None):
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        from observability.schema import parse_timestamp

        trace_id = int(ev["trace_id"], 16)
        context = SpanContext(
            trace_id, int(ev["span_id"], 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        parent = ev.get("parent_span_id")
        parent_ctx = SpanContext(trace_id, int(parent, 16), is_remote=False) if parent else None
        start_ms = timestamp_ms if timestamp_ms is not None else parse_timestamp(ev["timestamp"])
        start_ns = int(start_ms) * 1_000_000
        end_ns = start_ns + round(float(ev["latency_ms"]) * 1_000_000)
        attrs = {
            k: v if isinstance(v, (str, bool, int, float)) else json.dumps(v)
            for k, v in (ev.get("attributes") or {}).items()
        }
        attrs["http.response.status_code"] = int(ev["status_code"])
        message = ev.get("error_message")
        status = Status(StatusCode.ERROR, message) if message or ev["status_code"] >= 500 else Status(StatusCode.UNSET)
        return ReadableSpan(
            name=ev.get("endpoint") or "unknown",
            context=context,
            parent=parent_ctx,
            resource=self._resource(ev["service"]),
            attributes=attrs,
            kind=SpanKind.SERVER,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
        )
