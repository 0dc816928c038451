"""The mapping table of the README, rule by rule, and the OTLP/JSON and Content-Encoding decoders (in-process)."""

from __future__ import annotations

import base64
import gzip
import json
import zlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ingest import bodies, mapping, otlp_json
from observability.records import validate_log_line, validate_metric_line
from observability.schema import validate_line
from tests import otlp_samples as S

TOPIC = "raw_events"


def one(*spans, service="shop"):
    m = mapping.map_traces(S.traces(*spans, service=service), TOPIC)
    return m


def event(span, **kw) -> dict:
    m = one(span, **kw)
    assert m.rejected == 0, m.reasons
    (rec,) = m.records
    topic, key, value, ts_ms = rec
    ev = json.loads(value)
    assert topic == TOPIC and key == ev["trace_id"].encode() and ts_ms == span.start_time_unix_nano // 1_000_000
    validate_line(value)  # the schema's judge accepts it
    return ev


def reason(span) -> str:
    m = one(span)
    assert not m.records and m.rejected == 1
    return m.reasons[0]


@pytest.mark.parametrize(
    "attrs,name,expected",
    [
        ({"http.request.method": "GET", "http.route": "/users/{id}"}, "GET", "GET /users/{id}"),
        ({"http.method": "POST", "http.route": "/pay"}, "POST", "POST /pay"),  # legacy semantic conventions
        ({"http.route": "/only-route"}, "x", "/only-route"),
        ({"http.request.method": "GET"}, "GET /by-name", "GET /by-name"),
        ({}, "", "unknown"),
    ],
)
def test_endpoint_is_method_and_route_else_the_span_name(attrs, name, expected):
    sp = S.span(name)
    sp.attributes.extend(S.kv(k, v) for k, v in attrs.items())
    ev = event(sp)
    assert (validate_line(json.dumps(ev)).endpoint) == expected


@pytest.mark.parametrize(
    "attrs,status,expected",
    [
        ({"http.response.status_code": 404}, 0, 404),
        ({"http.status_code": 503}, 0, 503),  # legacy
        ({"http.response.status_code": "201"}, 2, 201),  # the attribute wins over the span status
        ({}, 2, 500),
        ({}, 1, 200),
        ({}, 0, 200),
    ],
)
def test_status_code_from_the_http_attribute_else_the_span_status(attrs, status, expected):
    sp = S.span(status_code=status)
    sp.attributes.extend(S.kv(k, v) for k, v in attrs.items())
    assert event(sp)["status_code"] == expected


def test_error_message_is_the_status_message_else_the_exception_event():
    assert event(S.span(status_code=2, status_message="db down"))["error_message"] == "db down"
    sp = S.span(status_code=2)
    ev = sp.events.add(name="exception", time_unix_nano=sp.start_time_unix_nano)
    ev.attributes.extend([S.kv("exception.type", "ValueError"), S.kv("exception.message", "bad input")])
    assert event(sp)["error_message"] == "bad input"
    assert event(S.span())["error_message"] is None


@pytest.mark.parametrize(
    "kind,expected", [(0, "internal"), (1, "internal"), (2, "server"), (3, "client"), (4, "producer"), (5, "consumer")]
)
def test_span_kind(kind, expected):
    ev = event(S.span(kind=kind))
    assert ev["kind"] == expected and ev["attributes"]["span.kind"] == expected


def test_service_from_the_resource_else_unknown_service():
    assert event(S.span(), service="billing")["service"] == "billing"
    assert event(S.span(), service=None)["service"] == "unknown_service"
    assert event(S.span(), service="  ")["service"] == "unknown_service"


def test_times_ids_and_attributes():
    start = S.NOW_NS + 123_456_789
    sp = S.span(
        start=start,
        duration_ns=2_500_001,
        parent=bytes.fromhex("00f067aa0ba902b7"),
        retries=3,
        ratio=0.5,
        flag=True,
        where="span",
    )
    sp.attributes.extend(
        [
            KeyValue(key="blob", value=AnyValue(bytes_value=b"\x00\x01")),
            KeyValue(key="nan", value=AnyValue(double_value=float("nan"))),
            # the zero values: a string read as "" first must still tell these apart
            KeyValue(key="empty", value=AnyValue(string_value="")),
            KeyValue(key="zero", value=AnyValue(int_value=0)),
            KeyValue(key="off", value=AnyValue(bool_value=False)),
            KeyValue(key="nought", value=AnyValue(double_value=0.0)),
            KeyValue(key="unset"),
        ]
    )
    arr = sp.attributes.add(key="list")
    arr.value.array_value.values.extend([AnyValue(int_value=1), AnyValue(string_value="a")])
    req = S.traces(sp)
    req.resource_spans[0].resource.attributes.extend([S.kv("where", "resource"), S.kv("host.name", "h1")])
    (rec,) = mapping.map_traces(req, TOPIC).records
    ev = json.loads(rec[2])
    assert ev["latency_ms"] == 2.500001
    assert ev["timestamp"] == validate_line(rec[2]).to_dict()["timestamp"]
    assert validate_line(rec[2]).timestamp_ms == start // 1_000_000
    assert (ev["trace_id"], ev["span_id"], ev["parent_span_id"]) == (S.TRACE.hex(), S.SPAN.hex(), "00f067aa0ba902b7")
    assert ev["attributes"] == {
        "service.name": "shop",
        "where": "span",
        "host.name": "h1",
        "retries": 3,
        "ratio": 0.5,
        "flag": True,
        "blob": base64.b64encode(b"\x00\x01").decode(),
        "nan": "nan",
        "empty": "",
        "zero": 0,
        "off": False,
        "nought": 0.0,
        "unset": None,
        "list": [1, "a"],
        "span.kind": "server",
    }
    assert [type(ev["attributes"][k]) for k in ("zero", "off", "nought")] == [int, bool, float]


def test_event_id_is_deterministic_per_span():
    a, b = event(S.span()), event(S.span(name="other name"))
    c = event(S.span(span_id=bytes.fromhex("0000000000000009")))
    assert a["event_id"] == b["event_id"] != c["event_id"]
    assert len(a["event_id"]) == 32


@pytest.mark.parametrize(
    "span,expected",
    [
        (S.span(trace_id=bytes(16)), "trace_id: all zeros is not a valid trace id"),
        (S.span(trace_id=b"\x01" * 8), "trace_id: must be 16 bytes, got 8"),
        (S.span(span_id=bytes(8)), "span_id: all zeros is not a valid span id"),
        (S.span(parent=b"\x01\x02"), "parent_span_id: must be empty or 8 bytes, got 2"),
        (S.span(start=0, duration_ns=5), "start_time_unix_nano: missing"),
        (S.span(duration_ns=-1), "end_time_unix_nano: before start_time_unix_nano"),
        (S.span(start=S.NOW_NS + 3 * 86_400 * 10**9), "start_time_unix_nano: more than a day in the future"),
        (S.span(http__response__status_code=999), "http.response.status_code: 999 outside 100-599"),
    ],
)
def test_unmappable_spans_are_rejected_with_a_reason(span, expected):
    assert reason(span) == expected


def test_records_over_the_schema_line_limit_are_rejected():
    big = S.span(blob="x" * (1024 * 1024))
    assert reason(big).startswith("span: ") and "exceeds the 1048576-byte limit" in reason(big)
    m = mapping.map_logs(S.logs({"body": "y" * (1024 * 1024 + 1)}), "raw_logs")
    assert not m.records and "log record: " in m.reasons[0]


def test_rejects_become_dead_letters_and_an_english_summary():
    m = one(S.span("ok"), S.span("bad", trace_id=b"1"), S.span("bad2", trace_id=b"22"))
    assert len(m.records) == 1 and m.rejected == 2 and len(m.dead_letters) == 2
    assert m.error_message("spans") == (
        "2 of 3 spans rejected: trace_id: must be 16 bytes, got 1; trace_id: must be 16 bytes, got 2"
    )
    dl = json.loads(m.dead_letters[0])
    assert dl["source"] == "otlp:traces" and json.loads(dl["payload"])["span"]["traceId"] == b"1".hex()


# -- logs and metrics ----------------------------------------------------------------------
def test_log_records_map_to_the_logs_contract():
    req = S.logs({"body": "x", "time": 0, "trace_id": b"", "span_id": b"", "severity_number": 0, "severity_text": ""})
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    rec.observed_time_unix_nano = S.NOW_NS
    rec.body.Clear()
    kv = rec.body.kvlist_value.values.add(key="user")
    kv.value.int_value = 7
    m = mapping.map_logs(req, "raw_logs")
    ((topic, key, value, ts_ms),) = m.records
    row = validate_log_line(value)
    assert ts_ms == S.NOW_NS // 1_000_000 == row["timestamp"]  # observed time when the time is unknown
    assert row["body"] == '{"user":7}' and row["severity_number"] is None and row["severity_text"] is None
    assert row["trace_id"] is None and key == b"shop" and row["attributes"] == {"service.name": "shop"}


def test_metric_points_map_to_the_metrics_contract():
    m = mapping.map_metrics(S.metrics(), "raw_metrics")
    rows = {r["name"]: r for r in (validate_metric_line(v) for _, _, v, _ in m.records)}
    assert rows["queue.depth"]["value"] == 7.0 and rows["queue.depth"]["kind"] == "gauge"
    assert rows["requests"]["attributes"]["metric.temporality"] == "cumulative"
    assert rows["requests"]["attributes"]["metric.monotonic"] is True
    h = rows["latency"]
    assert (h["count"], h["sum"], h["bucket_bounds"], h["bucket_counts"]) == (6, 123.5, [10.0, 100.0], [1, 4, 1])
    assert h["attributes"]["metric.temporality"] == "delta" and h["unit"] == "ms"
    assert sorted(m.reasons) == [
        "legacy.summary: summary points are not stored (gauge, sum and histogram are)",
        "value: must be finite",
    ]
    keys = {k for _, k, _, _ in m.records}
    assert keys == {b"shop/queue.depth", b"shop/requests", b"shop/latency"}


# -- OTLP/JSON --------------------------------------------------------------------------------
def test_otlp_json_accepts_snake_case_enum_names_and_numbers_and_roundtrips_hex():
    body = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": S.TRACE.hex().upper(),
                                "span_id": S.SPAN.hex(),
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": S.NOW_NS,
                                "end_time_unix_nano": str(S.NOW_NS + 1),
                                "links": [{"traceId": S.TRACE.hex(), "spanId": "00F067AA0BA902B7"}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    msg = otlp_json.parse(json.dumps(body).encode(), ExportTraceServiceRequest())
    sp = msg.resource_spans[0].scope_spans[0].spans[0]
    assert sp.trace_id == S.TRACE and sp.kind == Span.SPAN_KIND_CLIENT and sp.end_time_unix_nano == S.NOW_NS + 1
    assert sp.links[0].span_id == bytes.fromhex("00f067aa0ba902b7")
    again = otlp_json.to_dict(msg)
    assert again["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == S.TRACE.hex()
    assert otlp_json.parse(otlp_json.to_json(msg), ExportTraceServiceRequest()) == msg


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"[]", "must be a JSON object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": 5}]}]}]}', "must be a hex string"),
        (b'{"resourceSpans": {}}', ""),
    ],
)
def test_otlp_json_errors_name_the_problem(body, needle):
    with pytest.raises(otlp_json.OtlpJsonError) as err:
        otlp_json.parse(body, ExportTraceServiceRequest())
    assert needle in str(err.value)


def test_otlp_json_ignores_unknown_enum_names_like_unknown_fields():
    body = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_FROM_THE_FUTURE", "name": "n"}]}]}]}'
    sp = otlp_json.parse(body, ExportTraceServiceRequest()).resource_spans[0].scope_spans[0].spans[0]
    assert sp.name == "n" and sp.kind == Span.SPAN_KIND_UNSPECIFIED


def test_deeply_nested_json_is_refused_not_a_crash():
    value = {"stringValue": "leaf"}
    for _ in range(200):
        value = {"arrayValue": {"values": [value]}}
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": value}]}}]}
    with pytest.raises(otlp_json.OtlpJsonError):
        otlp_json.parse(json.dumps(body).encode(), ExportTraceServiceRequest())


# -- Content-Encoding -----------------------------------------------------------------------------
def test_decompression_formats_and_errors():
    raw = b"otlp" * 1000
    assert bodies.decompress(gzip.compress(raw), "GZIP", 10_000) == raw
    assert bodies.decompress(zlib.compress(raw), "deflate", 10_000) == raw
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert bodies.decompress(raw_deflate.compress(raw) + raw_deflate.flush(), "deflate", 10_000) == raw
    with pytest.raises(bodies.BodyTooLarge):
        bodies.decompress(gzip.compress(raw), "gzip", 3_999)
    with pytest.raises(bodies.BadEncoding):
        bodies.decompress(gzip.compress(raw)[:-20], "gzip", 10_000)
    with pytest.raises(bodies.BadEncoding):
        bodies.decompress(raw, "br", 10_000)
    assert bodies.decompress(raw, "identity", 4000) == raw
