"""Helpers for the Spark job tests and bench: synthetic traces, publishing, expected aggregates.

The event generator is another stage, so these tests make their own events
per `observability.schema` (traces of parent/child spans across services).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd

from observability.schema import DEFAULT_KIND, ENTRY_SPAN_SQL, format_timestamp

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", "checkout", "payments", "search", "inventory")
ENDPOINTS = {
    "gateway": ("/api/cart", "/api/search", "/api/pay"),
    "checkout": ("/checkout", "/cart"),
    "payments": ("/charge",),
    "search": ("/query", "/suggest"),
    "inventory": ("/stock",),
}
CALLS = {"gateway": ("checkout", "search"), "checkout": ("payments", "inventory"), "search": ("inventory",)}

# Lines a producer would reject, with the field the reason must name.
INVALID_LINES = [
    (b"not json at all", "json"),
    (b'{"timestamp": "2024-01-01T00:00:00Z", "service": "x", "status_code": 200}', "latency_ms"),
    (b'{"timestamp": "yesterday", "service": "x", "status_code": 200, "latency_ms": 1}', "timestamp"),
    (b'{"timestamp": "2024-01-01T00:00:00Z", "service": "x", "status_code": 700, "latency_ms": 1}', "status_code"),
    (b'{"timestamp": "2024-01-01T00:00:00Z", "service": "x", "status_code": 200, "latency_ms": NaN}', "latency_ms"),
    (b'{"timestamp": "2024-01-01T00:00:00Z", "service": "x", "status_code": 200, "latency_ms": -3}', "latency_ms"),
    (b'["an", "array"]', "event"),
    (b"\xff\xfe bad utf-8", "line"),
    (
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "x", "status_code": 200, "latency_ms": 1, "attributes": '
        + b"[" * 3000
        + b"]" * 3000
        + b"}",
        "json",
    ),  # nested deeper than the json module's recursion limit
]


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def make_events(n: int, start_ms: int, span_ms: int = 300_000, seed: int = 0, error_share: float = 0.05) -> list[dict]:
    """About `n` events: traces of a gateway span and its downstream calls."""
    rng = random.Random(seed)
    events: list[dict] = []
    while len(events) < n:
        trace_id = _hex(rng, 32)
        t0 = start_ms + rng.randrange(span_ms)
        failing = rng.random() < error_share
        _add_span(rng, events, trace_id, failing, "gateway", None, 0, t0)
    return events


def _add_span(
    rng: random.Random,
    events: list[dict],
    trace_id: str,
    failing: bool,
    service: str,
    parent: str | None,
    depth: int,
    ts: int,
) -> None:
    """One span of a trace and, recursively, the calls it makes (each with probability 0.8)."""
    span_id = _hex(rng, 16)
    status = 200
    if failing and (service in ("payments", "inventory") or rng.random() < 0.3):
        status = rng.choice((500, 502, 503))
    elif rng.random() < 0.03:
        status = rng.choice((400, 404, 429))
    latency = round(rng.lognormvariate(3.0 + 0.2 * depth, 0.6) * (3 if status >= 500 else 1), 3)
    events.append(
        {
            "event_id": _hex(rng, 32),
            "timestamp": format_timestamp(ts),
            "service": service,
            "endpoint": rng.choice(ENDPOINTS[service]),
            "status_code": status,
            "latency_ms": latency,
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "error_message": "upstream failed" if status >= 500 else None,
            "attributes": {"region": rng.choice(("eu", "us"))},
        }
    )
    for child in CALLS.get(service, ()):
        if rng.random() < 0.8:
            _add_span(rng, events, trace_id, failing, child, span_id, depth + 1, ts + rng.randrange(5))


def publish(settings, events: list[dict], extra_lines: list[bytes] = (), topic: str | None = None) -> None:
    from observability.transport import create_producer

    topic = topic or settings.raw_events_topic
    with create_producer(settings) as producer:
        for e in events:
            key = e["trace_id"].encode() if e.get("trace_id") else None
            producer.send(topic, json.dumps(e, separators=(",", ":")).encode(), key=key)
        for line in extra_lines:
            producer.send(topic, line, key=None)
        producer.flush()


def events_frame(events: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(events)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None)
    return df


def expected_metrics(events: list[dict], by_endpoint: bool = False) -> pd.DataFrame:
    """The in-process baseline: a plain DuckDB GROUP BY over the same events' entry spans."""
    df = events_frame(events)
    for col in ("kind", "parent_span_id"):
        if col not in df:
            df[col] = None
    df["kind"] = df["kind"].fillna(DEFAULT_KIND)
    df = df[["timestamp", "service", "endpoint", "status_code", "latency_ms", "kind", "parent_span_id"]]
    keys = "window_start, service" + (", endpoint" if by_endpoint else "")
    con = duckdb.connect()
    con.register("ev", df)
    return con.execute(
        f"""
        SELECT time_bucket(INTERVAL 1 MINUTE, timestamp) AS window_start, service
               {", endpoint" if by_endpoint else ""},
               count(*) AS request_count,
               count(*) FILTER (WHERE status_code >= 500) AS error_count,
               count(*) FILTER (WHERE status_code BETWEEN 400 AND 499) AS client_error_count,
               avg(latency_ms) AS avg_latency_ms, max(latency_ms) AS max_latency_ms,
               quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.95) AS p95,
               quantile_cont(latency_ms, 0.99) AS p99
        FROM ev WHERE {ENTRY_SPAN_SQL} GROUP BY ALL ORDER BY {keys}
        """
    ).df()


def rank_error(values: pd.Series, value: float, q: float) -> float:
    """How far (as a fraction of n) the rank of `value` is from the target quantile q."""
    s = values.sort_values().to_numpy()
    lo = (s < value).sum() / len(s)
    hi = (s <= value).sum() / len(s)
    if lo <= q <= hi:
        return 0.0
    return min(abs(q - lo), abs(q - hi))


def job_env(data_dir: Path, **overrides) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATA_DIR=str(data_dir),
        TRANSPORT="local",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="INFO",
    )
    env.pop("DUCKDB_PATH", None)
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_job(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m spark.streaming_job ...` as a subprocess; raises with its output when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "spark.streaming_job", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"job failed rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc
