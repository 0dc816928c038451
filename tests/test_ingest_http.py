"""Every OTLP/HTTP answer of the receiver, with raw requests against `python -m ingest`.

200 (protobuf and JSON), partial success with dead letters, 400 with a
google.rpc.Status, 405, 415, 413 (also for a gzip bomb, counted after
decompression), 503 with Retry-After while the transport cannot write, and
`GET /health`; the receiver keeps serving through all of it.
"""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import psutil
import pytest
import zstandard
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ingest.otlp_json import to_json
from observability.dead_letter import parse_dead_letter
from observability.schema import validate_line
from tests import otlp_samples as S
from tests.otlp_fixtures import read_values, start_receiver, stop_receiver

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}
SMALL_LIMIT = 64 * 1024


def post(rec, path: str, body: bytes, headers: dict) -> httpx.Response:
    return httpx.post(rec.http_url + path, content=body, headers=headers, timeout=30)


def status_of(resp: httpx.Response) -> status_pb2.Status:
    if resp.headers["content-type"].startswith("application/json"):
        obj = json.loads(resp.content)
        return status_pb2.Status(code=obj.get("code", 0), message=obj.get("message", ""))
    return status_pb2.Status.FromString(resp.content)


def events(settings) -> list[dict]:
    return [
        validate_line(v).to_dict() | {"kind": json.loads(v).get("kind")}
        for v in read_values(settings, settings.raw_events_topic)
    ]


def dead_letters(settings) -> list[dict]:
    return [parse_dead_letter(v) for v in read_values(settings, settings.dead_letter_topic)]


@pytest.fixture
def small_receiver(data_dir):
    rec = start_receiver(data_dir, {"OTLP_MAX_BODY_BYTES": str(SMALL_LIMIT)})
    yield rec
    stop_receiver(rec)


def test_protobuf_export_is_200_with_an_empty_response_after_publishing(receiver, settings):
    req = S.traces(
        S.span(
            "GET /api/x", http__request__method="GET", http__route="/api/items/{id}", http__response__status_code=404
        )
    )
    resp = post(receiver, "/v1/traces", req.SerializeToString(), PB)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(resp.content)
    assert not parsed.HasField("partial_success")
    (ev,) = events(settings)  # published (and durable) before the answer
    assert ev["service"] == "shop" and ev["endpoint"] == "GET /api/items/{id}" and ev["status_code"] == 404
    assert ev["trace_id"] == S.TRACE.hex() and ev["span_id"] == S.SPAN.hex() and ev["latency_ms"] == 25.0
    assert ev["kind"] == "server"


def test_json_export_takes_hex_ids_in_any_case_enums_as_ints_and_int64_strings(receiver, settings):
    start = S.NOW_NS
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "x", "futureField": 1},
                        "spans": [
                            {
                                "traceId": S.TRACE.hex().upper(),
                                "spanId": S.SPAN.hex().upper(),
                                "parentSpanId": "00F067AA0BA902B7",
                                "name": "consume orders",
                                "kind": 5,
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": start + 1_500_000,
                                "status": {"code": 2, "message": "poison message"},
                                "unknownField": {"a": 1},
                                "attributes": [{"key": "retries", "value": {"intValue": "3"}}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    resp = post(receiver, "/v1/traces", json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {}
    (ev,) = events(settings)
    assert (ev["trace_id"], ev["span_id"], ev["parent_span_id"]) == (S.TRACE.hex(), S.SPAN.hex(), "00f067aa0ba902b7")
    assert ev["kind"] == "consumer" and ev["endpoint"] == "consume orders"
    assert ev["status_code"] == 500 and ev["error_message"] == "poison message" and ev["latency_ms"] == 1.5
    assert ev["attributes"]["retries"] == 3


def test_partial_success_publishes_the_valid_spans_and_dead_letters_each_reject(receiver, settings):
    good = S.span("GET /ok", span_id=bytes.fromhex("0000000000000001"))
    req = S.traces(
        good,
        S.span("short trace id", trace_id=b"\x01\x02\x03"),
        S.span("backwards", span_id=bytes.fromhex("0000000000000002"), duration_ns=-5),
        S.span("long span id", span_id=b"123456789"),
    )
    resp = post(receiver, "/v1/traces", req.SerializeToString(), PB)
    assert resp.status_code == 200
    ps = ExportTraceServiceResponse.FromString(resp.content).partial_success
    assert ps.rejected_spans == 3
    assert ps.error_message.startswith("3 of 4 spans rejected: ")
    assert "trace_id: must be 16 bytes, got 3" in ps.error_message
    assert "end_time_unix_nano: before start_time_unix_nano" in ps.error_message
    assert "span_id: must be 8 bytes, got 9" in ps.error_message
    assert [e["span_id"] for e in events(settings)] == ["0000000000000001"]
    dls = dead_letters(settings)
    assert sorted(d["reason"] for d in dls) == sorted(
        [
            "trace_id: must be 16 bytes, got 3",
            "end_time_unix_nano: before start_time_unix_nano",
            "span_id: must be 8 bytes, got 9",
        ]
    )
    assert {d["source"] for d in dls} == {"otlp:traces"}
    names = {json.loads(d["payload"])["span"]["name"] for d in dls}
    assert names == {"short trace id", "backwards", "long span id"}


def test_partial_success_for_logs_and_metrics_in_json(receiver, settings):
    logs = S.logs({"body": "fine"}, {"body": "bad trace", "trace_id": b"\x01" * 5}, {"body": "no time", "time": 0})
    resp = post(receiver, "/v1/logs", to_json(logs), JS)
    assert resp.status_code == 200
    assert resp.json()["partialSuccess"]["rejectedLogRecords"] == "2"
    bodies = [json.loads(v)["body"] for v in read_values(settings, settings.logs_topic)]
    assert bodies == ["fine"]

    resp = post(receiver, "/v1/metrics", S.metrics().SerializeToString(), PB)
    assert resp.status_code == 200
    ps = ExportMetricsServiceResponse.FromString(resp.content).partial_success
    assert ps.rejected_data_points == 2
    assert "value: must be finite" in ps.error_message and "summary points are not stored" in ps.error_message
    rows = [json.loads(v) for v in read_values(settings, settings.metrics_topic)]
    assert sorted((r["name"], r["kind"]) for r in rows) == [
        ("latency", "histogram"),
        ("queue.depth", "gauge"),
        ("requests", "sum"),
    ]
    sources = sorted(d["source"] for d in dead_letters(settings))
    assert sources == ["otlp:logs", "otlp:logs", "otlp:metrics", "otlp:metrics"]


@pytest.mark.parametrize(
    "path,body,headers,needle",
    [
        ("/v1/traces", b"\xff\xff\xff garbage", PB, "cannot decode the body as ExportTraceServiceRequest"),
        ("/v1/logs", b"{not json", JS, "invalid JSON"),
        ("/v1/traces", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}', JS, "is not a hex string"),
        ("/v1/metrics", b'{"resourceMetrics": 5}', JS, "resourceMetrics"),
        ("/v1/traces", b"x", {**PB, "Content-Encoding": "br"}, "unsupported Content-Encoding"),
        ("/v1/traces", b"\x1f\x8b\x08\x00broken", {**PB, "Content-Encoding": "gzip"}, "gzip"),
    ],
)
def test_undecodable_bodies_are_400_with_a_status(receiver, settings, path, body, headers, needle):
    resp = post(receiver, path, body, headers)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == headers["Content-Type"]
    st = status_of(resp)
    assert st.code == 3 and needle in st.message, st.message
    assert read_values(settings, settings.raw_events_topic) == []
    assert receiver.health().status_code == 200


def test_other_methods_are_405_and_other_content_types_415(receiver):
    resp = httpx.get(receiver.http_url + "/v1/traces")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    resp = httpx.put(receiver.http_url + "/v1/metrics", content=b"", headers=PB)
    assert resp.status_code == 405
    resp = post(receiver, "/v1/logs", b"hello", {"Content-Type": "text/plain"})
    assert resp.status_code == 415 and "unsupported Content-Type 'text/plain'" in status_of(resp).message
    resp = post(receiver, "/v1/logs", b"hello", {})
    assert resp.status_code == 415


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_compressed_bodies_are_accepted(receiver, settings, encoding):
    raw = S.traces(S.span("GET /zipped")).SerializeToString()
    body = {"gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstandard.ZstdCompressor().compress}[encoding](raw)
    resp = post(receiver, "/v1/traces", body, {**PB, "Content-Encoding": encoding})
    assert resp.status_code == 200, resp.content
    assert [e["endpoint"] for e in events(settings)] == ["GET /zipped"]


def test_bodies_over_the_limit_are_413_also_after_decompression(small_receiver, settings):
    many = S.traces(*[S.span(f"GET /{i}" + "x" * 200, span_id=(i + 1).to_bytes(8, "big")) for i in range(400)])
    raw = many.SerializeToString()
    assert len(raw) > SMALL_LIMIT
    assert post(small_receiver, "/v1/traces", raw, PB).status_code == 413
    small_gzip = gzip.compress(raw)
    assert len(small_gzip) < SMALL_LIMIT  # small on the wire, too large once inflated
    resp = post(small_receiver, "/v1/traces", small_gzip, {**PB, "Content-Encoding": "gzip"})
    assert resp.status_code == 413 and "after gzip decompression" in status_of(resp).message
    # bombs: small on the wire, hundreds of times the limit once inflated; inflating stops at the limit
    rss_before = psutil.Process(small_receiver.proc.pid).memory_info().rss
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb_gzip = b"".join(gz.compress(bytes(1 << 20)) for _ in range(60)) + gz.flush()
    bomb_zstd = zstandard.ZstdCompressor().compress(bytes(256 << 20))
    for enc, bomb in (("gzip", bomb_gzip), ("zstd", bomb_zstd)):
        assert len(bomb) < SMALL_LIMIT
        resp = post(small_receiver, "/v1/traces", bomb, {**PB, "Content-Encoding": enc})
        assert resp.status_code == 413 and f"after {enc} decompression" in status_of(resp).message
    rss_after = psutil.Process(small_receiver.proc.pid).memory_info().rss
    assert rss_after - rss_before < 32 << 20
    assert read_values(settings, settings.raw_events_topic) == []
    assert small_receiver.health().status_code == 200


def test_unwritable_transport_is_503_with_retry_after_then_recovers(receiver, settings):
    topic_dir = settings.log_dir / settings.raw_events_topic
    aside = topic_dir.with_name(topic_dir.name + ".aside")
    topic_dir.rename(aside)
    topic_dir.write_text("not a directory")  # the real producer now fails with an OSError
    body = S.traces(S.span("GET /later")).SerializeToString()
    for headers in (PB, JS):
        payload = body if headers is PB else to_json(S.traces(S.span("GET /later")))
        resp = post(receiver, "/v1/traces", payload, headers)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert resp.headers["content-type"] == headers["Content-Type"]
        st = status_of(resp)
        assert st.code == 14 and "the transport cannot accept data now" in st.message
    health = receiver.health()
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    topic_dir.unlink()
    aside.rename(topic_dir)
    assert post(receiver, "/v1/traces", body, PB).status_code == 200
    assert receiver.health().status_code == 200
    assert [e["endpoint"] for e in events(settings)] == ["GET /later"]  # the refused attempts left nothing behind


def test_health_reports_ok_with_counters(receiver):
    resp = receiver.health()
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["transport"] == "local" and body["failures"] == 0
    assert httpx.get(receiver.http_url + "/nope").status_code == 404
