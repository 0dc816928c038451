"""The Spark job's logs and metrics queries: topics -> `logs`, `otel_metrics`, `dead_letter`, exactly once
(run as a subprocess, real Spark + DuckDB over the local log)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import pytest

from observability.records import LOG_FIELDS, METRIC_FIELDS, validate_log_record, validate_metric_point
from observability.schema import InvalidEvent, format_timestamp
from observability.transport import create_producer
from tests.spark_fixtures import job_env, run_job

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def _logs(base_ms: int, n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        error = i % 3 == 0
        out.append(
            {
                "timestamp": format_timestamp(base_ms + i * 1000),
                "service": ("checkout", "payments")[i % 2],
                "severity_text": "ERROR" if error else "INFO",
                "severity_number": 17 if error else 9,
                "body": f"payment {i} failed: card declined" if error else f"served request {i}",
                "trace_id": TRACE.upper() if i % 4 == 0 else None,  # upper case is accepted, stored lower
                "span_id": SPAN if i % 4 == 0 else None,
                "attributes": {"http.route": "/pay", "attempt": i} if i % 2 else None,
            }
        )
    return out


def _metrics(base_ms: int) -> list[dict]:
    ts = format_timestamp(base_ms)
    return [
        {
            "timestamp": ts,
            "service": "checkout",
            "name": "queue.depth",
            "kind": "gauge",
            "unit": "1",
            "value": 7,
            "attributes": {"queue": "orders"},
        },
        {"timestamp": ts, "service": "checkout", "name": "http.server.requests", "kind": "sum", "value": 1250.0},
        {
            "timestamp": ts,
            "service": "payments",
            "name": "http.server.duration",
            "kind": "histogram",
            "unit": "ms",
            "count": 6,
            "sum": 240.5,
            "bucket_bounds": [10.0, 100.0],
            "bucket_counts": [1, 4, 1],
        },
    ]


# Values the job must reject, each with the field its reason names (the validators' own reasons).
BAD_LOGS = [
    (b"{not json", "json"),
    (b'{"service": "checkout", "body": "no time"}', "timestamp"),
    (b'{"timestamp": "2026-01-01T00:00:00Z", "trace_id": "abc"}', "trace_id"),
    (b'{"timestamp": "2026-01-01T00:00:00Z", "severity_number": 99}', "severity_number"),
]
BAD_METRICS = [
    (b'{"timestamp": "2026-01-01T00:00:00Z", "name": "x", "kind": "summary", "value": 1}', "kind"),
    (b'{"timestamp": "2026-01-01T00:00:00Z", "name": "x", "kind": "gauge", "value": NaN}', "value"),
    (
        b'{"timestamp": "2026-01-01T00:00:00Z", "name": "h", "kind": "histogram", "count": 3, "sum": 1,'
        b' "bucket_bounds": [1.0], "bucket_counts": [1, 1]}',
        "bucket_counts",
    ),
    (
        b'{"timestamp": "2026-01-01T00:00:00Z", "name": "h", "kind": "histogram", "count": 18446744073709551615,'
        b' "sum": 1}',
        "count",
    ),  # an OTLP fixed64 beyond BIGINT
    (
        b'{"timestamp": "2026-01-01T00:00:00Z", "name": "g", "kind": "gauge", "value": 1, "attributes": {"a": '
        + b"[" * 3000
        + b"]" * 3000
        + b"}}",
        "json",
    ),  # nested deeper than the json module's recursion limit
]


def _publish(settings, topic: str, values: list) -> None:
    with create_producer(settings) as producer:
        for v in values:
            producer.send(topic, v if isinstance(v, bytes) else json.dumps(v).encode(), key=None)
        producer.flush()


def _expected(rows: list[dict], validate, fields) -> set[tuple]:
    out = set()
    for obj in rows:
        r = validate(obj)
        r["timestamp"] = datetime.fromtimestamp(r["timestamp"] / 1000, tz=UTC).replace(tzinfo=None)
        r["attributes"] = None if r["attributes"] is None else json.dumps(r["attributes"], sort_keys=True)
        for k in ("bucket_bounds", "bucket_counts"):
            if r.get(k) is not None:
                r[k] = tuple(r[k])
        out.add(tuple(r[f] for f in fields))
    return out


def _stored(store, table: str, fields) -> list[tuple]:
    df = store.fetch_df(f"SELECT * FROM {table}")
    rows = []
    for rec in df.to_dict("records"):
        rec["attributes"] = (
            None if rec["attributes"] is None else json.dumps(json.loads(rec["attributes"]), sort_keys=True)
        )
        for k in ("bucket_bounds", "bucket_counts"):
            if k in rec and rec[k] is not None:
                rec[k] = tuple(rec[k])
        for k, v in rec.items():
            if isinstance(v, float) and math.isnan(v):
                rec[k] = None
        if rec.get("severity_number") is not None:
            rec["severity_number"] = int(rec["severity_number"])
        if rec.get("count") is not None:
            rec["count"] = int(rec["count"])
        rows.append(tuple(rec[f] for f in fields))
    return rows


def _reason(validate, raw: bytes) -> str:
    from observability.schema import decode_line

    with pytest.raises(InvalidEvent) as exc:
        validate(decode_line(raw))
    return str(exc.value)


def test_logs_and_metrics_land_exactly_once_with_their_dead_letters(data_dir, settings, store):
    base = int(time.time() * 1000) // 60_000 * 60_000 - 10 * 60_000
    logs, metrics = _logs(base, 40), _metrics(base)
    surrogate = {
        "timestamp": format_timestamp(base),
        "service": "checkout",
        "severity_text": "WARN",
        "body": "bad \udc00 byte",
        "attributes": {"k\ud800": "v"},
    }
    _publish(settings, settings.logs_topic, [*logs, *(raw for raw, _ in BAD_LOGS)])
    with create_producer(settings) as producer:  # a lone surrogate is valid JSON: stored with U+FFFD
        producer.send(settings.logs_topic, json.dumps(surrogate).encode(), key=None)
    _publish(settings, settings.metrics_topic, [*metrics, *(raw for raw, _ in BAD_METRICS)])
    env = job_env(data_dir, MAX_EVENTS_PER_BATCH=15)  # several micro-batches per query
    proc = run_job(env, "--available-now")
    assert (
        f"{len(logs) + 1} logs, {len(metrics)} metric points, {len(BAD_LOGS) + len(BAD_METRICS)} logs/metrics rejected"
        in proc.stdout
    ), proc.stdout

    # 1. exact rows: what the shared validators make of each record
    got_logs = _stored(store, "logs", LOG_FIELDS)
    assert len(got_logs) == len(logs) + 1
    fixed = {**surrogate, "body": "bad \ufffd byte", "attributes": {"k\ufffd": "v"}}
    assert set(got_logs) == _expected([*logs, fixed], validate_log_record, LOG_FIELDS)
    with_trace = store.fetch_all("SELECT DISTINCT trace_id, span_id FROM logs WHERE trace_id IS NOT NULL")
    assert with_trace == [(TRACE, SPAN)]
    got_metrics = _stored(store, "otel_metrics", METRIC_FIELDS)
    assert sorted(got_metrics, key=str) == sorted(_expected(metrics, validate_metric_point, METRIC_FIELDS), key=str)
    hist = store.fetch_one("SELECT bucket_bounds, bucket_counts, count, sum FROM otel_metrics WHERE kind = 'histogram'")
    assert hist == ([10.0, 100.0], [1, 4, 1], 6, 240.5)

    # 2. every bad record is a dead letter with the validator's reason, naming its field, and its payload
    dead = store.fetch_df("SELECT source, reason, payload FROM dead_letter ORDER BY source")
    for topic, bad, validate in (
        (settings.logs_topic, BAD_LOGS, validate_log_record),
        (settings.metrics_topic, BAD_METRICS, validate_metric_point),
    ):
        mine = dead[dead.source.str.startswith(f"spark:{topic}:")]
        assert sorted(mine.reason) == sorted(_reason(validate, raw) for raw, _ in bad)
        for _, field in bad:
            assert mine.reason.str.startswith(field + ":").any(), field
        assert set(mine.payload) == {raw.decode() for raw, _ in bad}
    assert len(dead) == len(BAD_LOGS) + len(BAD_METRICS)
    commits = store.fetch_df("SELECT sink, batch_id FROM sink_commits")
    assert (commits.sink.str.startswith("logs:").sum() >= 3) and commits.sink.str.startswith("otel_metrics:").any()

    # 3. a crash after the DuckDB commit but before Spark's: the batch is replayed and writes nothing
    logs_commits = settings.checkpoint_dir / "logs" / "commits"
    last = max(int(p.name) for p in logs_commits.iterdir() if p.name.isdigit())
    for name in (str(last), f".{last}.crc"):  # the commit file and its checksum: as if never written
        (logs_commits / name).unlink(missing_ok=True)
    more = _logs(base, 5, offset=100)
    _publish(settings, settings.logs_topic, more)
    proc = run_job(env, "--available-now")
    assert f"{len(more)} logs, 0 metric points, 0 logs/metrics rejected" in proc.stdout, proc.stdout
    assert "batch already committed" in proc.stderr + proc.stdout
    again = _stored(store, "logs", LOG_FIELDS)
    assert len(again) == len(logs) + 1 + len(more)
    assert set(again) == _expected([*logs, fixed, *more], validate_log_record, LOG_FIELDS)
    assert store.fetch_one("SELECT count(*) FROM dead_letter")[0] == len(dead)

    # 4. nothing new: nothing changes
    run_job(env, "--available-now")
    assert sorted(_stored(store, "logs", LOG_FIELDS), key=str) == sorted(again, key=str)
    assert len(_stored(store, "otel_metrics", METRIC_FIELDS)) == len(metrics)


@pytest.mark.e2e
def test_continuous_job_starts_the_logs_query_when_logs_first_arrive(data_dir, settings, store):
    """Without records the logs and metrics queries do not run (each would keep a Python source
    process); the first log record starts the logs query, and its rows arrive."""
    import os
    import signal
    import subprocess
    import sys

    from tests.prometheus_scrape import free_port, scrape, value
    from tests.spark_fixtures import ROOT

    metrics_port = free_port()
    env = job_env(data_dir, TRIGGER_SECONDS=1, METRICS_PORT_SPARK=metrics_port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark.streaming_job"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:

        def poll(predicate, what: str, timeout: float = 180):
            deadline = time.monotonic() + timeout
            while not predicate():
                assert proc.poll() is None, proc.communicate()[0][-4000:]
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                time.sleep(0.5)

        def heartbeat_seen() -> bool:
            try:
                return store.fetch_one("SELECT count(*) FROM heartbeats WHERE component = 'spark'")[0] > 0
            except Exception:  # noqa: BLE001 - not migrated yet
                return False

        poll(heartbeat_seen, "the job's heartbeat")
        time.sleep(2)  # two more trigger periods with empty record topics: the queries stay unstarted
        assert (
            not (settings.checkpoint_dir / "logs").exists() and not (settings.checkpoint_dir / "otel_metrics").exists()
        )
        logs = _logs(int(time.time() * 1000) - 60_000, 6)
        _publish(settings, settings.logs_topic, logs)
        poll(lambda: store.fetch_one("SELECT count(*) FROM logs")[0] == len(logs), "the log rows")
        # the job's /metrics (Prometheus' parser): the log records in and written, no rejects
        samples = scrape(metrics_port)
        assert value(samples, "observability_events_in_total", stage="spark", kind="logs") == len(logs)
        assert value(samples, "observability_events_out_total", stage="spark", kind="logs") == len(logs)
        assert value(samples, "observability_service_info", service="spark") == 1
        assert not (settings.checkpoint_dir / "otel_metrics").exists()
    finally:
        proc.send_signal(signal.SIGTERM)  # the driver only: it stops its queries and the JVM itself
        try:
            out = proc.communicate(timeout=90)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0]
    assert proc.returncode == 0, out[-4000:]
    assert set(_stored(store, "logs", LOG_FIELDS)) == _expected(logs, validate_log_record, LOG_FIELDS)
