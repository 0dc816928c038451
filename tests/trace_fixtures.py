"""Seed traces the way the streaming job writes them (tests and screenshots).

Span lines go through the job's own pieces, without the JVM: parsed by
`spark.staging.RangeParser`, side outputs (`spark.side_outputs.compute`: call edges,
trace-index partial rows) per range, committed by `spark.sink.DuckDBSink.write_batch`
(the exactly-once transaction), and the valid spans written to bronze. One showcase
trace has every finding: an N+1 to the database, sequential calls, a remote span with
clock skew, an orphan and an error origin, plus its OTLP log records.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from observability import bronze, tables
from observability.schema import format_timestamp
from observability.store import Store
from observability.transport.base import Record
from spark import side_outputs, trace_index
from spark.sink import BatchOutput, DuckDBSink
from spark.staging import StagedRange, parse_records
from tests.spark_fixtures import make_events

SHOWCASE_QUERY = "SELECT * FROM items WHERE order_id = ?"


@dataclass
class SeededTraces:
    events: list[dict]
    showcase: str  # trace id of the trace with every finding
    start: datetime
    end: datetime


def _ms(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1000)


def showcase_trace(t0_ms: int) -> tuple[str, list[dict]]:
    """gateway -> checkout -> 6 x postgresql (N+1, sequential) and payments (remote clock
    180 ms ahead, fails: the error origin); an orphan whose parent never arrived."""
    trace = uuid.uuid4().hex
    ids = iter(f"{i:016x}" for i in range(1, 100))

    def span(parent, offset, latency, service, endpoint, status=200, error=None, **attrs):
        sid = next(ids)
        return sid, {
            "event_id": uuid.uuid4().hex,
            "timestamp": format_timestamp(t0_ms + offset),
            "service": service,
            "endpoint": endpoint,
            "status_code": status,
            "latency_ms": latency,
            "trace_id": trace,
            "span_id": sid,
            "parent_span_id": parent,
            "error_message": error,
            "kind": attrs.pop("kind", "server"),
            "attributes": {"host": f"{service}-1", "region": "eu", **attrs},
        }

    rows = []
    root, r = span(None, 0, 400, "gateway", "/api/checkout", 502, "upstream checkout failed")
    rows.append(r)
    checkout, r = span(root, 10, 360, "checkout", "/checkout", 502, "payment failed")
    rows.append(r)
    for i in range(6):
        _, r = span(
            checkout, 20 + 25 * i, 20, "postgresql", "SELECT", kind="client", **{"db.statement": SHOWCASE_QUERY}
        )
        rows.append(r)
    # payments' clock runs 180 ms ahead: recorded after checkout ended, shifted back into it
    _, r = span(checkout, 180 + 180, 150, "payments", "/charge", 503, "card processor timeout")
    rows.append(r)
    _, r = span("feedfacecafebeef", 390, 5, "audit", "/record")  # its parent never arrived
    rows.append(r)
    return trace, rows


def commit_spans(store: Store, bronze_dir, events: list[dict], batch_id: int, ranges: int = 2) -> None:
    """Parse, stage and commit `events` as one micro-batch of `ranges` ranges, as the job does."""
    sink = DuckDBSink(store, "metrics:seed", side_outputs.SAMPLE_CAPS)
    chunk = -(-len(events) // ranges)
    staged, edges = [], []
    for i in range(ranges):
        part = events[i * chunk : (i + 1) * chunk]
        records = [
            Record("raw_events", i, n, _ms(datetime.now(UTC).replace(tzinfo=None)), None, json.dumps(e).encode())
            for n, e in enumerate(part)
        ]
        valid = parse_records("raw_events", records).valid_table()
        if valid.num_rows:
            bronze.write_events(bronze_dir, valid.to_pandas())
        side = side_outputs.compute(valid)
        edges += side["edges"]
        staged.append(
            StagedRange(
                "raw_events", i, 0, len(part), valid.num_rows, 0, None, [], None, [], [], [], traces=side["traces"]
            )
        )
    deps = pd.DataFrame(edges, columns=list(side_outputs.EDGE_COLUMNS))
    deps = deps.groupby(["window_start_ms", "parent_service", "child_service"], as_index=False).sum()
    deps["window_start"] = pd.to_datetime(deps["window_start_ms"], unit="ms")
    metrics = pd.DataFrame(columns=["window_start", "window_end", "service", "endpoint", *tables.METRIC_VALUE_COLUMNS])
    out = BatchOutput(batch_id, metrics, dependencies=deps, traces=trace_index.batch_frame(staged))
    assert sink.write_batch(out)


def seed_traces(store: Store, bronze_dir, now: datetime, n_events: int = 1_500) -> SeededTraces:
    """Generated traces over the last 50 minutes plus the showcase trace, in two batches."""
    start = now - timedelta(minutes=50)
    events = make_events(n_events, _ms(start), 40 * 60_000, seed=21, error_share=0.1)
    showcase, rows = showcase_trace(_ms(now - timedelta(minutes=5)))
    events += rows
    half = len(events) // 2
    commit_spans(store, bronze_dir, events[:half], batch_id=0)
    commit_spans(store, bronze_dir, events[half:], batch_id=1)
    t = now - timedelta(minutes=5)
    store.insert_df(
        tables.LOGS,
        pd.DataFrame(
            [
                dict(
                    timestamp=t + timedelta(milliseconds=370),
                    service="payments",
                    severity_text="ERROR",
                    severity_number=17,
                    body="card processor timeout after 150 ms",
                    trace_id=showcase,
                    span_id=None,
                    attributes=None,
                )
            ]
        ),
    )
    return SeededTraces(events, showcase, start, now)


def expected_index(events: list[dict]) -> pd.DataFrame:
    """The independent answer: one GROUP BY over all the spans at once."""
    df = pd.DataFrame(events)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None)
    df["end"] = df["ts"] + pd.to_timedelta(df["latency_ms"], unit="ms")
    rows = []
    for trace_id, g in df[df["trace_id"].notna()].groupby("trace_id"):
        roots = g[g["parent_span_id"].isna()]
        root = (roots if len(roots) else g).sort_values(["ts", "span_id"]).iloc[0]
        rows.append(
            {
                "trace_id": trace_id,
                "start_time": g["ts"].min(),
                "end_time": g["end"].max(),
                "root_service": root["service"],
                "root_endpoint": root["endpoint"],
                "root_span_id": root["span_id"] if len(roots) else None,
                "duration_ms": (g["end"].max() - g["ts"].min()).total_seconds() * 1000,
                "span_count": len(g),
                "error_count": int((g["status_code"] >= 500).sum()),
                "services": sorted(set(g["service"])),
            }
        )
    return pd.DataFrame(rows).sort_values("trace_id").reset_index(drop=True)


def read_index(store) -> pd.DataFrame:
    got = store.fetch_df(f"SELECT * EXCLUDE (updated_at) FROM {tables.TRACE_INDEX} ORDER BY trace_id")
    got["services"] = [sorted(v) for v in got["services"]]
    return got


def assert_index_equals(store, events) -> None:
    got, want = read_index(store), expected_index(events)
    assert list(got["trace_id"]) == list(want["trace_id"])
    for col in ("root_service", "root_endpoint", "span_count", "error_count", "services"):
        assert got[col].tolist() == want[col].tolist(), col
    assert got["root_span_id"].where(got["root_span_id"].notna(), None).tolist() == want["root_span_id"].tolist()
    for col in ("start_time", "end_time"):
        assert (got[col] - want[col]).abs().max() <= pd.Timedelta(microseconds=1), col
    assert (got["duration_ms"] - want["duration_ms"]).abs().max() < 1e-3
