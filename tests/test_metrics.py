"""Each long-running service's /metrics, scraped and read with Prometheus' own text parser.

The generator, the OTLP receiver, the model server and the narrator are started
here as the real processes; the detector (tests/test_detection_once.py), the
Spark job (tests/test_spark_otlp.py), the notifier (tests/test_notifier.py)
and the search indexer (tests/test_search.py) are scraped in tests that already
start them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from observability import metrics
from tests import otlp_samples as S
from tests.llm_fixtures import TEST_MODEL, seed_scenario
from tests.otlp_fixtures import start_receiver, stop_receiver
from tests.prometheus_scrape import free_port, scrape, value, wait_for_metric
from tests.test_llm_narrator import seed_huge_error

ROOT = Path(__file__).resolve().parents[1]


def test_serve_shares_the_names_once_per_process_and_a_taken_port_costs_only_a_warning(settings):
    port = free_port()
    assert metrics.serve(metrics.NOTIFIER, settings, port=port) == port
    assert metrics.serve(metrics.NOTIFIER, settings, port=port) == port  # a second call starts nothing
    before = scrape(port)
    metrics.record_batch("test_stage", seconds=0.2, rows_in=5, rows_out=3, rejects={"bad": 2, "none": 0})
    after = scrape(port)
    delta = lambda name, **labels: (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)  # noqa: E731
    assert delta("observability_events_in_total", stage="test_stage", kind="record") == 5
    assert delta("observability_events_out_total", stage="test_stage", kind="record") == 3
    assert delta("observability_rejects_total", stage="test_stage", reason="bad") == 2
    assert value(after, "observability_rejects_total", stage="test_stage", reason="none") is None
    assert delta("observability_batch_duration_seconds_count", stage="test_stage") == 1
    assert delta("observability_batch_duration_seconds_bucket", stage="test_stage", le="0.25") == 1
    assert delta("observability_batch_duration_seconds_bucket", stage="test_stage", le="0.1") == 0
    assert value(after, "process_cpu_seconds_total") > 0  # prometheus-client's process collector
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert metrics.serve(metrics.NOTIFIER, settings, port=taken.getsockname()[1]) is None


def test_generator_counts_what_it_publishes(data_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(data_dir), "METRICS_PORT_GENERATOR": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "event_generator", "--speed", "realtime", "--rate", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        samples = wait_for_metric(port, "observability_events_out_total", stage="generator", kind="span")
        assert value(samples, "observability_service_info", service="generator") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 0, err[-3000:]


def test_ingest_counts_records_published_and_rejected_requests(data_dir):
    port = free_port()
    rec = start_receiver(data_dir, {"METRICS_PORT_INGEST": str(port)})
    try:
        req = S.traces(S.span("GET /a"), S.span("GET /b", span_id=bytes.fromhex("eee19b7ec3c1b175")))
        pb = {"Content-Type": "application/x-protobuf"}
        assert httpx.post(rec.http_url + "/v1/traces", content=req.SerializeToString(), headers=pb).status_code == 200
        assert httpx.post(rec.http_url + "/v1/traces", content=b"\xff not otlp", headers=pb).status_code == 400
        samples = scrape(port)
    finally:
        stop_receiver(rec)
    assert value(samples, "observability_events_in_total", stage="ingest", kind="record") == 2
    assert value(samples, "observability_events_out_total", stage="ingest", kind="record") == 2
    assert value(samples, "observability_rejects_total", stage="ingest", reason="http_400") == 1
    assert value(samples, "observability_batch_duration_seconds_count", stage="ingest") == 1


def test_model_server_and_narrator_report_requests_latency_fallbacks_and_backlog(
    store,
    settings,
    data_dir,
    llm_server_process,
):
    """An incident whose facts exceed the server's prompt limit: refused (413) at once, so the
    narrator's template stands in: one summary, its latency, one `refused` fallback."""
    incident = seed_scenario(store, settings.bronze_dir, "payments")
    seed_huge_error(store, settings.bronze_dir, incident, "payments")
    server_port, narrator_port = llm_server_process.metrics_port, free_port()
    before = scrape(server_port)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(data_dir),
        "OLLAMA_URL": llm_server_process.url,
        "OLLAMA_MODEL": TEST_MODEL,
        "METRICS_PORT_NARRATOR": str(narrator_port),
        "NARRATE_INTERVAL_SECONDS": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm.narrator"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_metric(narrator_port, "observability_events_out_total", timeout=120, stage="narrator", kind="summary")
        # the backlog gauge is set at the end of the cycle, after the summary is counted: wait for it too
        narrator = wait_for_metric(
            narrator_port, "observability_backlog", predicate=lambda v: v is not None, timeout=60, stage="narrator"
        )
        served = scrape(server_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0, err[-3000:]
    assert store.fetch_all("SELECT generated_by FROM incident_summaries") == [("template",)]
    assert value(narrator, "observability_narrator_latency_seconds_count", generated_by="template") == 1
    assert value(narrator, "observability_narrator_fallbacks_total", reason="refused") == 1
    assert value(narrator, "observability_backlog", stage="narrator") == 0
    refused = ("observability_http_requests_total", frozenset({"path": "/api/chat", "code": "413"}.items()))
    assert served[refused] - before.get(refused, 0) >= 1
    assert value(served, "observability_service_info", service="model_server") == 1
