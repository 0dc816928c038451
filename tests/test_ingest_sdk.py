"""The real OpenTelemetry SDK as client: an instrumented two-service app exports over HTTP and gRPC.

The topics are read back from the local log and compared with what the app
did (span ids from the SDK itself): every span one event with the right
service, kind, route, status, parent and error message; every log line with
its trace context; the counter and histogram points exactly. Then the
transport breaks under the SDK (the local log's topic directory replaced by a
file: a real OSError from the real producer): the receiver answers 503 /
UNAVAILABLE, the SDK retries, and once the log is writable again everything
arrives, once.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from observability.records import validate_log_line, validate_metric_line
from observability.schema import validate_event
from tests import otlp_samples as S
from tests.otlp_fixtures import read_values, run_shop, wait_for

ORDERS, ERROR_EVERY = 12, 4


def _endpoint(rec, protocol: str) -> str:
    return rec.http_url if protocol == "http" else rec.grpc_target


def _events(settings) -> list[dict]:
    return [json.loads(v) for v in read_values(settings, settings.raw_events_topic)]


@pytest.mark.parametrize("protocol,workers", [("http", 0), ("grpc", 0), ("http", 2), ("grpc", 2)])
def test_sdk_app_telemetry_arrives_exactly(protocol, workers, request, settings):
    rec = request.getfixturevalue("pooled_receiver" if workers else "receiver")
    truth, services = run_shop(protocol, _endpoint(rec, protocol), ORDERS, ERROR_EVERY)
    try:
        _check_shop(settings, truth)
    finally:
        for svc in services:
            svc.shutdown()  # (exports the cumulative metrics once more)


def _check_shop(settings, truth) -> None:
    events = _events(settings)
    assert len(events) == 4 * ORDERS
    for ev in events:
        validate_event(ev)  # the schema's judge accepts every event as published
    by_span = {ev["span_id"]: ev for ev in events}
    assert len(by_span) == len(events)
    errors = set(truth.errors)
    assert len(errors) == ORDERS // ERROR_EVERY

    # kinds and services, from the SDK's own span ids
    for service, ids in truth.server_spans.items():
        assert {by_span[i]["kind"] for i in ids} == {"server"} and {by_span[i]["service"] for i in ids} == {service}
    for service, ids in truth.client_spans.items():
        assert {by_span[i]["kind"] for i in ids} == {"client"} and {by_span[i]["service"] for i in ids} == {service}
    for child, parent in truth.parent_of.items():
        assert by_span[child]["parent_span_id"] == parent

    roots = [by_span[i] for i in truth.server_spans["frontend"]]
    assert [r["endpoint"] for r in roots] == ["GET /api/orders/{id}"] * ORDERS
    assert [r["trace_id"] for r in roots] == truth.trace_of_order
    assert [r["status_code"] for r in roots] == [502 if o in errors else 200 for o in range(ORDERS)]
    assert [r["error_message"] for r in roots] == [
        "upstream backend returned 500" if o in errors else None for o in range(ORDERS)
    ]
    assert all(r["parent_span_id"] is None for r in roots)
    charges = [by_span[i] for i in truth.backend_span_of_order]
    assert [c["endpoint"] for c in charges] == ["POST /api/charge"] * ORDERS
    assert [c["status_code"] for c in charges] == [500 if o in errors else 200 for o in range(ORDERS)]
    # no status message: the error message comes from the recorded exception event
    assert [c["error_message"] for c in charges] == [
        f"card declined for order {o}" if o in errors else None for o in range(ORDERS)
    ]
    # the dependency edge: backend's server span is the child of frontend's client span, across services
    calls = {by_span[i]["span_id"]: by_span[i] for i in truth.client_spans["frontend"]}
    for c in charges:
        assert calls[c["parent_span_id"]]["service"] == "frontend"
    db = [by_span[i] for i in truth.client_spans["backend"]]
    assert {d["endpoint"] for d in db} == {"SELECT orders"} and all(
        d["attributes"]["db.system"] == "postgresql" for d in db
    )
    assert all(d["status_code"] == 200 for d in db)
    for ev in events:
        assert ev["attributes"]["service.name"] == ev["service"] and ev["attributes"]["span.kind"] == ev["kind"]
        assert ev["attributes"]["deployment.environment"] == "test"
        assert 0 <= ev["latency_ms"] < 10_000

    # logs: one per order, from the backend, inside its server span
    logs = [validate_log_line(v) for v in read_values(settings, settings.logs_topic)]
    assert len(logs) == ORDERS
    by_body = {row["body"]: row for row in logs}
    for o in range(ORDERS):
        row = by_body[f"charge failed for order {o}" if o in errors else f"charged order {o}"]
        assert row["service"] == "backend"
        assert row["severity_text"] == ("ERROR" if o in errors else "INFO")
        assert row["severity_number"] == (17 if o in errors else 9)
        assert row["trace_id"] == truth.trace_of_order[o]
        assert row["span_id"] == truth.backend_span_of_order[o]
        assert row["attributes"]["order.id"] == o

    # metrics: the counters and the histogram, exactly
    points = [validate_metric_line(v) for v in read_values(settings, settings.metrics_topic)]
    counters = {(p["service"], p["attributes"]["outcome"]): p for p in points if p["name"] == "shop.orders"}
    n_err = len(errors)
    assert {k: p["value"] for k, p in counters.items()} == {
        ("frontend", "ok"): ORDERS - n_err,
        ("frontend", "error"): n_err,
        ("backend", "ok"): ORDERS - n_err,
        ("backend", "error"): n_err,
    }
    assert all(
        p["kind"] == "sum"
        and p["attributes"]["metric.monotonic"] is True
        and p["attributes"]["metric.temporality"] == "cumulative"
        for p in counters.values()
    )
    (hist,) = [p for p in points if p["name"] == "shop.charge.amount"]
    assert hist["kind"] == "histogram" and hist["service"] == "backend" and hist["unit"] == "EUR"
    assert hist["count"] == len(truth.amounts) and hist["sum"] == pytest.approx(sum(truth.amounts))
    assert sum(hist["bucket_counts"]) == hist["count"] and len(hist["bucket_counts"]) == len(hist["bucket_bounds"]) + 1
    bounds = hist["bucket_bounds"]
    expected = [0] * (len(bounds) + 1)
    for a in truth.amounts:
        expected[next((i for i, b in enumerate(bounds) if a <= b), len(bounds))] += 1
    assert hist["bucket_counts"] == expected
    assert len(points) == 5
    assert read_values(settings, settings.dead_letter_topic) == []


def _break_log(settings):
    """Make the raw-events topic unwritable for real: its directory becomes a plain file."""
    topic_dir = settings.log_dir / settings.raw_events_topic
    aside = topic_dir.with_name(topic_dir.name + ".aside")
    topic_dir.rename(aside)
    topic_dir.write_text("not a directory")
    return topic_dir, aside


def _mend_log(topic_dir, aside) -> None:
    topic_dir.unlink()
    aside.rename(topic_dir)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_transport_failure_is_503_and_the_sdk_retry_delivers_everything(protocol, pooled_receiver, settings):
    rec = pooled_receiver
    # one export first, so the producer has its partitions open: the failure then hits a flush with
    # records buffered for several partitions (what a full disk does), not the first send
    warm_up = S.traces(S.span("warm-up", span_id=bytes.fromhex("00000000000000aa")))
    assert (
        httpx.post(
            rec.http_url + "/v1/traces",
            content=warm_up.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ).status_code
        == 200
    )
    topic_dir, aside = _break_log(settings)
    truth, services = run_shop(protocol, _endpoint(rec, protocol), 6, 3, flush=False)
    flushed = {}
    frontend, backend = services
    t = threading.Thread(
        target=lambda: flushed.update(
            ok=frontend.tracer_provider.force_flush(60_000) and backend.tracer_provider.force_flush(60_000)
        )
    )
    t.start()
    # the receiver refuses (and says so on /health) while the log is broken ...
    wait_for(lambda: rec.health().status_code == 503, 20, "the receiver to report the transport down")
    failures = rec.health().json()["failures"]
    assert failures >= 1 and "unavailable" in rec.health().json()["status"]
    _mend_log(topic_dir, aside)
    t.join(60)
    assert flushed.get("ok") is True, rec.output()
    for svc in services:
        svc.shutdown()
    events = _events(settings)
    expected = {sid for ids in (*truth.server_spans.values(), *truth.client_spans.values()) for sid in ids}
    expected.add("00000000000000aa")
    assert sorted(ev["span_id"] for ev in events) == sorted(expected)  # every span, each once
    assert rec.health().status_code == 200
    assert rec.proc.poll() is None  # it kept serving


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_gzip_compression(protocol, receiver, settings, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")  # read by the SDK's exporters
    truth, services = run_shop(protocol, _endpoint(receiver, protocol), 3, 2)
    try:
        events = _events(settings)
        assert len(events) == 12 and {e["status_code"] for e in events} >= {200, 500}
        assert len(read_values(settings, settings.logs_topic)) == 3
    finally:
        for svc in services:
            svc.shutdown()
