"""Every OTLP/gRPC answer of the receiver, with raw calls through the generated stubs.

OK with an empty response, partial success, INVALID_ARGUMENT for bytes that
do not decode, RESOURCE_EXHAUSTED past the size limit (also gzip-compressed,
counted after decompression), UNAVAILABLE with a RetryInfo while the
transport cannot write.
"""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from tests import otlp_samples as S
from tests.otlp_fixtures import read_values, start_receiver, stop_receiver

SMALL_LIMIT = 64 * 1024


@pytest.fixture
def channel(receiver):
    with grpc.insecure_channel(receiver.grpc_target) as ch:
        yield ch


def test_export_is_ok_with_an_empty_response_for_every_signal(channel, settings):
    resp = TraceServiceStub(channel).Export(
        S.traces(S.span("GET /grpc", http__route="/grpc", http__method="GET")), timeout=10
    )
    assert not resp.HasField("partial_success")
    (ev,) = [json.loads(v) for v in read_values(settings, settings.raw_events_topic)]
    assert ev["endpoint"] == "GET /grpc" and ev["kind"] == "server"
    assert not LogsServiceStub(channel).Export(S.logs({"body": "hi"}), timeout=10).HasField("partial_success")
    assert [json.loads(v)["body"] for v in read_values(settings, settings.logs_topic)] == ["hi"]
    ps = MetricsServiceStub(channel).Export(S.metrics(), timeout=10).partial_success
    assert ps.rejected_data_points == 2 and "2 of 5 data points rejected" in ps.error_message


def test_partial_success_rejects_bad_spans_one_by_one(channel, settings):
    req = S.traces(S.span("ok"), S.span("no span id", span_id=b""), service=None)
    ps = TraceServiceStub(channel).Export(req, timeout=10).partial_success
    assert ps.rejected_spans == 1 and "span_id: must be 8 bytes, got 0" in ps.error_message
    (ev,) = [json.loads(v) for v in read_values(settings, settings.raw_events_topic)]
    assert ev["service"] == "unknown_service"  # no service.name, as the SDKs report it
    (dl,) = [json.loads(v) for v in read_values(settings, settings.dead_letter_topic)]
    assert dl["source"] == "otlp:traces" and dl["reason"] == "span_id: must be 8 bytes, got 0"


def test_undecodable_request_is_invalid_argument(channel, receiver):
    raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode the request as ExportTraceServiceRequest" in err.value.details()
    assert receiver.health().status_code == 200


def test_requests_over_the_limit_are_resource_exhausted_also_when_compressed(data_dir, settings):
    rec = start_receiver(data_dir, {"OTLP_MAX_BODY_BYTES": str(SMALL_LIMIT)})
    try:
        big = S.traces(*[S.span("GET /" + "y" * 300, span_id=(i + 1).to_bytes(8, "big")) for i in range(300)])
        assert big.ByteSize() > SMALL_LIMIT
        with grpc.insecure_channel(rec.grpc_target) as ch:
            for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip):
                with pytest.raises(grpc.RpcError) as err:
                    TraceServiceStub(ch).Export(big, timeout=10, compression=compression)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, compression
            TraceServiceStub(ch).Export(S.traces(S.span("small")), timeout=10, compression=grpc.Compression.Gzip)
        assert [json.loads(v)["endpoint"] for v in read_values(settings, settings.raw_events_topic)] == ["small"]
    finally:
        stop_receiver(rec)


def test_unwritable_transport_is_unavailable_with_retry_info(channel, receiver, settings):
    topic_dir = settings.log_dir / settings.raw_events_topic
    aside = topic_dir.with_name(topic_dir.name + ".aside")
    topic_dir.rename(aside)
    topic_dir.write_text("not a directory")
    with pytest.raises(grpc.RpcError) as err:
        TraceServiceStub(channel).Export(S.traces(S.span("GET /later")), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(err.value.trailing_metadata())
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert info.retry_delay.seconds == 1
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == 14 and status.details[0].Unpack(error_details_pb2.RetryInfo())
    topic_dir.unlink()
    aside.rename(topic_dir)
    TraceServiceStub(channel).Export(S.traces(S.span("GET /later")), timeout=10)
    assert [json.loads(v)["endpoint"] for v in read_values(settings, settings.raw_events_topic)] == ["GET /later"]
