"""Fixtures for tests that run over both transport backends (local log, Kafka).

`backend_settings` is parametrized: "local" (the embedded log under the
test's DATA_DIR) and "kafka" (the session's Tansu broker, with topic names
unique to the test, since the broker outlives one test). The environment is
exported too, so a `python -m event_generator` subprocess publishes to the
same place.
"""

from __future__ import annotations

import uuid

import pytest

from tests.kafka_broker import consume

BACKENDS = ["local", pytest.param("kafka", marks=pytest.mark.kafka)]


@pytest.fixture(params=BACKENDS)
def backend_settings(request, data_dir, monkeypatch):
    from observability.settings import get_settings

    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_broker")
        suffix = uuid.uuid4().hex[:8]
        monkeypatch.setenv("TRANSPORT", "kafka")
        monkeypatch.setenv("KAFKA_BROKER", bootstrap)
        for var, name in (
            ("KAFKA_RAW_EVENTS_TOPIC", "raw_events"),
            ("KAFKA_AGGREGATED_TOPIC", "aggregated_metrics"),
            ("KAFKA_ANOMALIES_TOPIC", "anomalies"),
            ("KAFKA_DEAD_LETTER_TOPIC", "dead_letter"),
        ):
            monkeypatch.setenv(var, f"{name}_{suffix}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def read_topic(settings, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    """Every record of a topic (Record-like: .key .value .timestamp/.timestamp_ms .offset .partition)."""
    if settings.transport == "kafka":
        return consume(settings.kafka_broker, topic, expected, timeout_s=timeout_s)
    from observability.transport import create_reader

    out = []
    with create_reader(settings) as reader:
        for p, end in reader.end_offsets(topic).items():
            out.extend(reader.read(topic, p, 0, end))
    return out


def record_ts(rec) -> int:
    return rec.timestamp_ms if hasattr(rec, "timestamp_ms") else rec.timestamp


def run_cli(*args: str, timeout: float = 120.0):
    """`python -m event_generator ARGS` in a subprocess, with this test's environment."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "event_generator", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_counts(stdout: str, prefix: str) -> dict[str, int]:
    """Parse the one summary line `PREFIX: k=v k=v` (asserting there is exactly one)."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(prefix + ":")]
    assert len(lines) == 1, f"expected one {prefix!r} line in stdout, got {stdout!r}"
    return {k: int(v) for k, v in (item.split("=") for item in lines[0].split(":", 1)[1].split())}
