"""The trace index: per-range partial rows merged across micro-batches, exactly once.

The unit tests parse real lines (`spark.staging.RangeParser`), compute the range's side
outputs and commit them through the real sink; the Spark test runs the streaming job in
process on a local session, in small micro-batches, then replays the last one.
"""

from __future__ import annotations

import json
import random
import threading

import duckdb
import pandas as pd
import pytest

from observability import tables
from observability.schema import format_timestamp
from observability.tables import METRIC_VALUE_COLUMNS
from observability.transport.base import Record
from spark import side_outputs, trace_index
from spark.sink import BatchOutput, DuckDBSink
from spark.staging import StagedRange, parse_records
from tests.spark_fixtures import make_events, publish
from tests.trace_fixtures import assert_index_equals, read_index

T0_MS = 1_714_564_800_000  # 2024-05-01 12:00 UTC


def _sid(name: str | None) -> str | None:
    """A valid 16-hex span id from a short name ("c1" -> "00000000000000c1")."""
    return None if name is None else name.encode().hex().rjust(16, "0")


def _span(trace, span_id, parent, offset_ms, latency, service, status=200, endpoint="/x"):
    span_id, parent = _sid(span_id), _sid(parent)
    return {
        "event_id": f"{trace[:16]}{span_id}",
        "timestamp": format_timestamp(T0_MS + offset_ms),
        "service": service,
        "endpoint": endpoint,
        "status_code": status,
        "latency_ms": latency,
        "trace_id": trace,
        "span_id": span_id,
        "parent_span_id": parent,
    }


def _parsed(events: list[dict]) -> int:
    records = [
        Record("raw_events", 0, i, T0_MS + 3_600_000, None, json.dumps(e).encode()) for i, e in enumerate(events)
    ]
    return parse_records("raw_events", records).valid_table().num_rows


def _range_partials(events: list[dict]) -> list[list]:
    """What the source ships for a range of these events (parsed as Spark's source parses them)."""
    records = [
        Record("raw_events", 0, i, T0_MS + 3_600_000, None, json.dumps(e).encode()) for i, e in enumerate(events)
    ]
    return side_outputs.compute(parse_records("raw_events", records).valid_table())["traces"]


def _batch(batch_id: int, *ranges: list[dict]) -> BatchOutput:
    staged = [
        StagedRange("raw_events", 0, i, i + 1, len(r), 0, None, [], None, [], [], [], traces=_range_partials(r))
        for i, r in enumerate(ranges)
    ]
    return BatchOutput(
        batch_id,
        pd.DataFrame(columns=["window_start", "window_end", "service", "endpoint", *METRIC_VALUE_COLUMNS]),
        traces=trace_index.batch_frame(staged),
    )


def test_a_trace_across_ranges_and_batches_is_merged_once(store):
    sink = DuckDBSink(store, "metrics:test", side_outputs.SAMPLE_CAPS)
    # trace a: root in batch 1, children in batch 0 (two ranges); trace b: all in batch 0
    a_children = [
        _span("a" * 32, "c1", "r1", 5, 20, "checkout", 503),
        _span("a" * 32, "c2", "c1", 8, 40, "payments", 500, "/charge"),
    ]
    a_root = [_span("a" * 32, "r1", None, 0, 100, "gateway", 500, "/api/pay")]
    b = [_span("b" * 32, "s1", None, 50, 10, "search"), _span("b" * 32, "s2", "s1", 52, 3, "inventory")]
    assert _parsed(a_children + a_root + b) == 5  # every line valid
    first = _batch(0, a_children[:1], a_children[1:] + b)
    assert sink.write_batch(first) is True
    row = store.fetch_one(
        f"SELECT root_service, root_span_id, span_count FROM {tables.TRACE_INDEX} WHERE trace_id = ?", ["a" * 32]
    )
    assert row == ("checkout", None, 2)  # root not seen yet: the earliest span stands in
    assert sink.write_batch(first) is False  # a replayed batch adds nothing
    assert sink.write_batch(_batch(1, a_root)) is True
    assert_index_equals(store, a_children + a_root + b)
    a = read_index(store).iloc[0]
    assert (a.root_service, a.root_endpoint, a.span_count, a.error_count, a.duration_ms) == (
        "gateway",
        "/api/pay",
        3,
        3,
        100.0,
    )


def test_partials_of_generated_traces_split_anywhere_add_up(store):
    events = make_events(600, T0_MS, 120_000, seed=4, error_share=0.2)
    random.Random(1).shuffle(events)  # children before parents, traces in pieces
    sink = DuckDBSink(store, "metrics:test", side_outputs.SAMPLE_CAPS)
    cuts = [0, 90, 200, 260, 410, len(events)]
    pieces = [events[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    assert sink.write_batch(_batch(0, pieces[0], pieces[1]))
    assert sink.write_batch(_batch(1, pieces[2]))
    assert sink.write_batch(_batch(2, pieces[3], pieces[4]))
    assert_index_equals(store, events)


def test_partial_sql_picks_the_parentless_span_as_root():
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE ev AS SELECT * FROM (VALUES "
        "('t', 's2', 's1', TIMESTAMP '2024-01-01 00:00:00.001', 'child', '/c', 200, 1.5),"
        "('t', 's1', NULL, TIMESTAMP '2024-01-01 00:00:00.002', 'root', '/r', 502, 1.5)) "
        "v(trace_id, span_id, parent_span_id, timestamp, service, endpoint, status_code, latency_ms)"
    )
    [got] = trace_index.partials(con).to_pylist()
    assert tuple(got) == trace_index.PARTIAL_COLUMNS
    assert (got["root_service"], got["root_endpoint"], got["root_span_id"]) == ("root", "/r", "s1")
    assert got["end_us"] - got["start_us"] == 2500 and (got["span_count"], got["error_count"]) == (2, 1)
    assert got["services"] == ["child", "root"]


@pytest.fixture(scope="module")
def spark_session(tmp_path_factory):
    from observability.settings import Settings
    from spark.session import build_session

    spark = build_session(Settings(DATA_DIR=str(tmp_path_factory.mktemp("trace-index"))), app_name="trace-index-tests")
    yield spark
    spark.stop()


@pytest.mark.e2e
def test_streaming_job_writes_the_index_across_micro_batches_and_replays_once(
    spark_session, data_dir, settings, store, monkeypatch
):
    from spark.streaming_job import StreamingJob

    events = make_events(500, T0_MS, 60_000, seed=11, error_share=0.2)
    # the second half of every trace's spans come after all the first halves: traces straddle batches
    by_trace: dict[str, list[dict]] = {}
    for e in events:
        by_trace.setdefault(e["trace_id"], []).append(e)
    firsts = [e for spans in by_trace.values() for e in spans[: len(spans) // 2 or 1]]
    seconds = [e for spans in by_trace.values() for e in spans[len(spans) // 2 or 1 :]]
    publish(settings, firsts + seconds)
    settings = settings.model_copy(update={"max_events_per_batch": 200})
    job = StreamingJob(spark_session, settings, store)
    job.record_topics = {}  # no logs or metric points here
    try:
        assert job.run(True, threading.Event()) == 0
    finally:
        job.close()
    batches = store.fetch_one(f"SELECT count(*) FROM {tables.STREAM_PROGRESS}")[0]
    assert batches >= 3
    assert_index_equals(store, events)

    # a crash after the DuckDB commit, before Spark's: Spark replays the batch, the index stays
    before = read_index(store)
    commits = settings.checkpoint_dir / "metrics" / "commits"
    last = max(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    (commits / str(last)).unlink()
    (commits / f".{last}.crc").unlink(missing_ok=True)
    job = StreamingJob(spark_session, settings, store)
    job.record_topics = {}
    try:
        assert job.run(True, threading.Event()) == 0
    finally:
        job.close()
    pd.testing.assert_frame_equal(read_index(store), before)


def test_retention_drops_traces_that_ended_before_the_cutoff(settings, store):
    from datetime import timedelta

    from observability import quality
    from observability.store import utcnow

    now = utcnow()
    cutoff = quality.retention_cutoff(settings, now)
    rows = pd.DataFrame(
        {
            "trace_id": ["old", "straddles", "new"],
            "start_us": [
                int((t - pd.Timestamp("1970-01-01")).total_seconds() * 1e6)
                for t in (pd.Timestamp(cutoff) - timedelta(minutes=5),) * 2 + (pd.Timestamp(cutoff),)
            ],
            "end_us": 0,
            "root_service": "svc",
            "root_endpoint": "/x",
            "root_span_id": None,
            "span_count": 1,
            "error_count": 0,
            "services": [["svc"]] * 3,
        }
    )
    offsets = {"old": -timedelta(minutes=1), "straddles": timedelta(minutes=1), "new": timedelta(minutes=2)}
    rows["end_us"] = [
        int((pd.Timestamp(cutoff) + offsets[t] - pd.Timestamp("1970-01-01")).total_seconds() * 1e6)
        for t in rows["trace_id"]
    ]
    store.write(lambda con: trace_index.upsert(con, rows, now))
    deleted = quality.apply_retention(settings, store, now)
    assert deleted[tables.TRACE_INDEX] == 1
    assert {r[0] for r in store.fetch_all(f"SELECT trace_id FROM {tables.TRACE_INDEX}")} == {"straddles", "new"}


def test_trace_key_in_python_is_the_sql_key():
    """The dashboard and seeders key rows in Python; the sink keys them in SQL: a lookup by one
    must find rows written by the other."""
    rng = random.Random(7)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(500)] + ["", "a", "trace-é-ü", "0" * 32, "f" * 32]
    in_sql = duckdb.execute(
        f"SELECT {tables.trace_key_sql('x')} FROM unnest(?) WITH ORDINALITY u(x, i) ORDER BY i", [ids]
    )
    assert [r[0] for r in in_sql.fetchall()] == [tables.trace_key(i) for i in ids]
    assert len({tables.trace_key(i) for i in ids}) == len(ids)


def test_a_trace_key_collision_merges_only_the_row_of_the_same_trace(store):
    """A row whose trace_key matches but whose trace_id differs (a 64-bit hash collision,
    forged here) is left alone: the batch's trace gets its own row, merged once per batch."""
    sink = DuckDBSink(store, "metrics:test", side_outputs.SAMPLE_CAPS)
    a, other = "a" * 32, "c" * 32
    store.execute(
        f"""INSERT INTO {tables.TRACE_INDEX} (trace_id, start_time, end_time, root_service, duration_ms, span_count,
                error_count, services, updated_at, trace_key)
            VALUES (?, TIMESTAMP '2024-05-01 11:00:00', TIMESTAMP '2024-05-01 11:00:01', 'other', 1000, 7, 0,
                    ['other'], TIMESTAMP '2024-05-01 11:00:01', ?)""",
        [other, tables.trace_key(a)],
    )
    first = [_span(a, "r1", None, 0, 100, "gateway")]
    later = [_span(a, "c1", "r1", 5, 20, "checkout", 503)]
    assert sink.write_batch(_batch(0, first))
    assert sink.write_batch(_batch(1, later))
    rows = store.fetch_all(
        f"SELECT trace_id, span_count, error_count, services, trace_key FROM {tables.TRACE_INDEX} ORDER BY trace_id"
    )
    key = tables.trace_key(a)
    assert rows == [(a, 2, 1, ["checkout", "gateway"], key), (other, 7, 0, ["other"], key)]


def test_migration_16_keeps_the_indexed_rows_and_keys_them(tmp_path, monkeypatch):
    """A database from before migration 16 (trace_index with a primary-key index) keeps every
    row, gains its trace_key, loses the index, and merges later batches into those rows."""
    from observability.store import Store

    store = Store(tmp_path / "old.duckdb")
    monkeypatch.setattr(tables, "MIGRATIONS", [m for m in tables.MIGRATIONS if m[0] < 16])
    store.migrate()
    store.execute(
        f"""INSERT INTO {tables.TRACE_INDEX} VALUES
            (?, TIMESTAMP '2024-05-01 12:00:00', TIMESTAMP '2024-05-01 12:00:00.100', 'gateway', '/x', ?, 100, 1, 0,
             ['gateway'], TIMESTAMP '2024-05-01 12:00:01'),
            ('b', TIMESTAMP '2024-05-01 12:00:00', TIMESTAMP '2024-05-01 12:00:00.010', 's', '/y', NULL, 10, 2, 1,
             ['s'], TIMESTAMP '2024-05-01 12:00:01')""",
        ["a" * 32, _sid("r1")],
    )
    monkeypatch.undo()
    assert store.migrate() == [16]
    rows = store.fetch_all(f"SELECT trace_id, span_count, trace_key FROM {tables.TRACE_INDEX} ORDER BY trace_id")
    assert rows == [("a" * 32, 1, tables.trace_key("a" * 32)), ("b", 2, tables.trace_key("b"))]
    constraints = store.fetch_all(
        "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = ? AND constraint_type <> 'NOT NULL'",
        [tables.TRACE_INDEX],
    )
    assert constraints == []  # no index to load and rewrite on every batch's connection
    sink = DuckDBSink(store, "metrics:test", side_outputs.SAMPLE_CAPS)
    assert sink.write_batch(_batch(0, [_span("a" * 32, "c1", "r1", 5, 20, "checkout", 503)]))
    assert store.fetch_all(
        f"SELECT trace_id, span_count, error_count, services FROM {tables.TRACE_INDEX} ORDER BY trace_id"
    ) == [("a" * 32, 2, 1, ["checkout", "gateway"]), ("b", 2, 1, ["s"])]
