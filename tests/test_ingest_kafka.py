"""The receiver over the Kafka transport (the compose setup), against the Tansu test broker.

The SDK app exports over OTLP/HTTP; spans, log records and metric points come
back from the broker's topics with the same counts as over the local log.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.kafka_broker import consume
from tests.otlp_fixtures import run_shop, start_receiver, stop_receiver

pytestmark = pytest.mark.kafka


def test_sdk_app_over_http_into_kafka(data_dir, kafka_broker):
    suffix = uuid.uuid4().hex[:8]
    topics = {
        var: f"{name}_{suffix}"
        for var, name in (
            ("KAFKA_RAW_EVENTS_TOPIC", "raw_events"),
            ("KAFKA_AGGREGATED_TOPIC", "aggregated_metrics"),
            ("KAFKA_ANOMALIES_TOPIC", "anomalies"),
            ("KAFKA_DEAD_LETTER_TOPIC", "dead_letter"),
            ("KAFKA_LOGS_TOPIC", "raw_logs"),
            ("KAFKA_METRICS_TOPIC", "raw_metrics"),
        )
    }
    rec = start_receiver(data_dir, {"TRANSPORT": "kafka", "KAFKA_BROKER": kafka_broker, **topics}, timeout_s=60)
    try:
        truth, services = run_shop("http", rec.http_url, orders=6, error_every=3)
        events = [json.loads(r.value) for r in consume(kafka_broker, topics["KAFKA_RAW_EVENTS_TOPIC"], 24)]
        assert len(events) == 24 and {e["kind"] for e in events} == {"server", "client"}
        assert sorted(e["span_id"] for e in events) == sorted(
            s for ids in (*truth.server_spans.values(), *truth.client_spans.values()) for s in ids
        )
        assert all(
            r.key == json.loads(r.value)["trace_id"].encode()
            for r in consume(kafka_broker, topics["KAFKA_RAW_EVENTS_TOPIC"], 24)
        )
        logs = consume(kafka_broker, topics["KAFKA_LOGS_TOPIC"], 6)
        assert sorted(json.loads(r.value)["trace_id"] for r in logs) == sorted(truth.trace_of_order)
        points = consume(kafka_broker, topics["KAFKA_METRICS_TOPIC"], 5)
        assert len(points) == 5
        for svc in services:
            svc.shutdown()
    finally:
        stop_receiver(rec)
    assert "Traceback" not in rec.output(), rec.output()


def test_kafka_away_is_a_quick_503_not_a_hang(data_dir):
    """No broker behind KAFKA_BROKER: connecting retries for 30 s in the background, and requests
    meanwhile get 503 at once (the SDK's 10 s timeout would otherwise expire first)."""
    import time

    import httpx

    from tests import otlp_samples as S
    from tests.otlp_fixtures import free_port, wait_for

    rec = start_receiver(
        data_dir, {"TRANSPORT": "kafka", "KAFKA_BROKER": f"127.0.0.1:{free_port()}"}, expect_healthy=False
    )
    try:
        wait_for(lambda: rec.health().status_code == 503, 30, "the receiver to answer /health")
        t0 = time.monotonic()
        resp = httpx.post(
            rec.http_url + "/v1/traces",
            content=S.traces(S.span("x")).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=30,
        )
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert time.monotonic() - t0 < 3
        assert "not connected to the transport" in resp.text
    finally:
        stop_receiver(rec)
