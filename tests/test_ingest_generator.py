"""`python -m event_generator --otlp URL`: the generator's traffic through the receiver with the SDK exporter.

The same seed written with `--to-file` is the truth: every span arrives in the
raw-events topic once, with the same trace, span and parent ids, service,
endpoint, status, error message, timestamp and latency (to the nanosecond the
protocol carries).
"""

from __future__ import annotations

import json

import pytest

from observability.schema import validate_line
from tests.otlp_fixtures import read_values
from tests.transport_fixtures import run_cli, summary_counts

FIELDS = ("trace_id", "span_id", "parent_span_id", "service", "endpoint", "status_code", "error_message", "timestamp")


def _key(ev: dict) -> tuple:
    return tuple(ev[f] for f in FIELDS)


def test_generator_traffic_through_the_receiver_matches_the_file_run(receiver, settings, tmp_path):
    flags = [
        "--speed",
        "max",
        "--duration",
        "30",
        "--seed",
        "11",
        "--start",
        "2026-11-30T12:00:00Z",
        "--scenario",
        "error_surge:payments@0+1",
    ]
    truth_run = run_cli(*flags, "--to-file", str(tmp_path / "truth.jsonl"))
    assert truth_run.returncode == 0, truth_run.stderr
    truth = [validate_line(line).to_dict() for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    otlp_run = run_cli(*flags, "--otlp", receiver.http_url)
    assert otlp_run.returncode == 0, otlp_run.stderr
    assert summary_counts(otlp_run.stdout, "generator summary")["published"] == len(truth)
    got = [
        validate_line(v).to_dict() | {"kind": json.loads(v)["kind"]}
        for v in read_values(settings, settings.raw_events_topic)
    ]
    assert len(got) == len(truth) > 100
    assert any(ev["status_code"] >= 500 and ev["error_message"] for ev in truth)  # the surge made errors
    assert sorted(map(_key, got)) == sorted(map(_key, truth))
    latency = {ev["span_id"]: ev["latency_ms"] for ev in truth}
    for ev in got:
        assert ev["latency_ms"] == pytest.approx(latency[ev["span_id"]], abs=1e-6)
        assert ev["kind"] == "server"
        assert ev["attributes"]["service.name"] == ev["service"]


def test_otlp_flag_refuses_to_file(tmp_path):
    out = run_cli("--otlp", "http://127.0.0.1:1", "--to-file", str(tmp_path / "x.jsonl"), "--duration", "1")
    assert out.returncode == 2 and "--otlp sends to a receiver" in out.stderr
