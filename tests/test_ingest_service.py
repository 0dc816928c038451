"""The receiver as a service: heartbeat and health checks, a clean stop, a taken port."""

from __future__ import annotations

import signal
import subprocess
import sys

from observability import health, tables
from observability.store import Store, utcnow
from tests import otlp_samples as S
from tests.otlp_fixtures import ROOT, read_values, start_receiver, stop_receiver, wait_for


def test_heartbeat_health_checks_and_a_clean_stop(data_dir, settings, monkeypatch):
    rec = start_receiver(data_dir)
    monkeypatch.setenv("OTLP_HTTP_PORT", str(rec.http_port))
    from observability.settings import get_settings

    get_settings.cache_clear()
    s = get_settings()
    store = Store.from_settings(s)
    try:
        wait_for(
            lambda: store.fetch_one(f"SELECT detail FROM {tables.HEARTBEATS} WHERE component = 'ingest'"),
            30,
            "the ingest heartbeat",
        )
        result = health.check_ingest(s, store, utcnow())
        assert result.status == "healthy" and "/health" in result.detail, result
        script = subprocess.run(
            [sys.executable, "scripts/health_check.py", "--component", "ingest"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert script.returncode == 0 and "OK   ingest" in script.stdout, script.stdout + script.stderr
        import httpx

        resp = httpx.post(
            rec.http_url + "/v1/traces",
            content=S.traces(S.span("before stop")).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert resp.status_code == 200
        rec.proc.send_signal(signal.SIGTERM)
        assert rec.proc.wait(30) == 0
        assert "receiver stopped" in rec.output() and "Traceback" not in rec.output()
    finally:
        stop_receiver(rec)
    assert len(read_values(s, s.raw_events_topic)) == 1
    down = health.check_ingest(s, store, utcnow())
    assert down.status == "unhealthy" and "unreachable" in down.detail


def test_a_taken_port_is_a_clear_error_not_a_traceback(data_dir):
    rec = start_receiver(data_dir)
    try:
        import os

        env = {
            **os.environ,
            "DATA_DIR": str(data_dir),
            "OTLP_HTTP_PORT": "0",
            "OTLP_GRPC_PORT": str(rec.grpc_port),
            "PYTHONPATH": str(ROOT),
        }
        out = subprocess.run(
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 1
        assert "cannot listen for OTLP/gRPC" in out.stderr and "Traceback" not in out.stderr, out.stderr
    finally:
        stop_receiver(rec)


def test_a_dead_mapping_worker_costs_at_most_one_request(data_dir, settings):
    import httpx
    import psutil

    rec = start_receiver(data_dir, {"OTLP_WORKERS": "2"})
    try:
        workers = [c for c in psutil.Process(rec.proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
        workers[0].kill()  # the pool notices and fails what it had in flight
        answers = []

        def post_ok():
            body = S.traces(S.span(f"after crash {len(answers)}")).SerializeToString()
            resp = httpx.post(
                rec.http_url + "/v1/traces",
                content=body,
                headers={"Content-Type": "application/x-protobuf"},
                timeout=30,
            )
            answers.append(resp.status_code)
            return resp.status_code == 200

        wait_for(post_ok, 60, "a 200 after the workers died")
        assert set(answers) <= {200, 500} and answers.count(500) <= 1, answers
        assert rec.proc.poll() is None and rec.health().status_code == 200
    finally:
        stop_receiver(rec)
    assert len(read_values(settings, settings.raw_events_topic)) == 1
