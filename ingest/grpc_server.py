"""OTLP/gRPC: the TraceService, LogsService and MetricsService `Export` calls.

The handlers take the raw request bytes (no deserializer in the method
handler), so a body that does not decode is answered INVALID_ARGUMENT by us
rather than a bare INTERNAL from grpc. gRPC itself enforces the size limit
(`grpc.max_receive_message_length` = OTLP_MAX_BODY_BYTES, checked after
decompression): RESOURCE_EXHAUSTED. When the transport cannot accept, the
answer is UNAVAILABLE with a RetryInfo, both as the standard
`grpc-status-details-bin` and as the `google.rpc.retryinfo-bin` trailer the
OpenTelemetry exporters read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ingest.publish import Publisher, TransportUnavailable
from ingest.signals import SIGNALS, Signal
from ingest.workers import Mapper
from observability.logs import get_logger
from observability.settings import Settings

log = get_logger(__name__)

PROTOBUF = "application/x-protobuf"
RETRY_DELAY_SECONDS = 1
WORKERS = 8  # concurrent Export calls; they wait on the publisher, so more than the cores


def _retry_trailers(message: str) -> list[tuple[str, bytes]]:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_DELAY_SECONDS))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail])
    return [
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    ]


class ExportHandler:
    """One signal's Export: decode, map, publish, answer."""

    def __init__(self, signal: Signal, settings: Settings, publisher: Publisher, mapper: Mapper) -> None:
        self.signal = signal
        self.topic = signal.topic_of(settings)
        self.publisher = publisher
        self.mapper = mapper

    def __call__(self, raw: bytes, context: grpc.ServicerContext):
        with self.publisher.expecting() as expected:  # the publisher may wait for it (group commit)
            return self._map_and_publish(raw, context, expected)

    def _map_and_publish(self, raw: bytes, context: grpc.ServicerContext, expected):
        signal = self.signal
        try:
            mapped = self.mapper.submit(signal.name, PROTOBUF, raw, self.topic).result()
        except DecodeError as exc:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot decode the request as {signal.request_type.DESCRIPTOR.name}: {exc}",
            )
        except Exception as exc:  # a mapping bug or a dead worker must cost one call, never the receiver
            log.exception("mapping failed", signal=signal.name)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error mapping the request: {exc}")
        if mapped.records or mapped.dead_letters:
            try:
                self.publisher.publish(mapped.records, mapped.dead_letters, expected).result()
            except TransportUnavailable as exc:
                text = f"the transport cannot accept data now: {exc}"
                context.set_trailing_metadata(_retry_trailers(text))
                context.abort(grpc.StatusCode.UNAVAILABLE, text)
        return signal.response(mapped)


def create_server(
    settings: Settings, publisher: Publisher, mapper: Mapper, port: int | None = None
) -> tuple[grpc.Server, int]:
    """A (not yet started) server bound to OTLP_HOST:OTLP_GRPC_PORT; returns it and the bound port."""
    limit = settings.otlp_max_body_bytes
    server = grpc.server(
        ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ingest-grpc"),
        options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
    )
    for signal in SIGNALS:
        handler = grpc.unary_unary_rpc_method_handler(
            ExportHandler(signal, settings, publisher, mapper),
            request_deserializer=None,
            response_serializer=lambda m: m.SerializeToString(),
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(signal.grpc_service, {"Export": handler}),)
        )
    host = settings.otlp_host
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    address = f"{bind_host}:{settings.otlp_grpc_port if port is None else port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError when the port is taken
        raise OSError(f"cannot bind gRPC on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot bind gRPC on {address}")
    return server, bound
