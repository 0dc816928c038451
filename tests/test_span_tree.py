"""observability.span_tree against its definition, the recursive SQL (observability.layers.ENRICH_SQL)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from observability import layers, span_tree
from tests.shared_data import nezha_dir

T0 = datetime(2026, 3, 2, 4, 0, 0)


def _forest(seed: int) -> list[dict]:
    """Traces of every shape bad data has: duplicates (a replayed span), a parent in another
    trace, a missing parent, a span that names itself, a two-span cycle, null ids, children
    outside their parent's interval, zero latencies, and a chain deeper than MAX_DEPTH."""
    rng = random.Random(seed)
    rows: list[dict] = []

    def add(trace, sid, parent, offset_ms, latency, service=None):
        rows.append(
            dict(
                trace_id=trace,
                span_id=sid,
                parent_span_id=parent,
                timestamp=T0 + timedelta(microseconds=offset_ms * 1000),
                latency_ms=latency,
                service=service or rng.choice(["gateway", "checkout", "payments"]),
                endpoint=rng.choice(["/a", "/b", None]),
                kind=rng.choice(["server", "client", "internal", None]),
            )
        )

    for t in range(40):
        trace = f"{seed:04x}{t:028x}"
        ids = [f"{t:08x}{i:08x}" for i in range(rng.randint(1, 25))]
        for i, sid in enumerate(ids):
            roll = rng.random()
            if i == 0 or roll < 0.05:
                parent = None
            elif roll < 0.10:
                parent = "f" * 16  # names no span
            elif roll < 0.13:
                parent = sid  # names itself
            else:
                parent = ids[rng.randrange(i)]
            add(trace, sid, parent, rng.uniform(0, 200), rng.choice([0.0, rng.uniform(0, 150)]))
            if rng.random() < 0.08:
                rows.append(dict(rows[-1]))  # the same span twice
        if t % 10 == 3 and len(ids) > 2:  # a cycle: the first two spans name each other
            rows[-len(ids)]["parent_span_id"] = ids[1]
            rows[-len(ids) + 1]["parent_span_id"] = ids[0]
    add(None, "a" * 16, None, 5, 10.0)  # no trace id
    add("e" * 32, None, "b" * 16, 5, 10.0)  # no span id, its parent present
    add("e" * 32, "b" * 16, None, 0, 50.0)
    add("0" * 31 + "1", "c" * 16, "0" * 8 + "00000001", 1, 1.0)  # a parent id of another trace
    chain = "d" * 32
    for i in range(span_tree.MAX_DEPTH + 5):
        add(chain, f"{i:016x}", None if i == 0 else f"{i - 1:016x}", i * 0.5, 1000.0 - i)
    rng.shuffle(rows)
    return rows


def _by_sql(table: pa.Table) -> dict[str, np.ndarray]:
    con = duckdb.connect()
    con.register("ctx", table)
    con.execute(layers.ENRICH_SQL)
    got = con.sql("SELECT _row, parent_service, depth, self_time_ms FROM enriched ORDER BY _row").to_arrow_table()
    con.close()
    return {c: got.column(c).to_numpy(zero_copy_only=False) for c in got.column_names}


def _by_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    start_us = table.column("timestamp").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    ctx = span_tree.span_context(
        table.column("trace_id"),
        table.column("span_id"),
        table.column("parent_span_id"),
        start_us,
        table.column("latency_ms").to_numpy(),
    )
    services = np.array(table.column("service").to_pylist() + [None], dtype=object)
    return {
        "_row": np.arange(table.num_rows),
        "parent_service": services[ctx.parent_row],
        "depth": ctx.depth,
        "self_time_ms": ctx.self_time_ms,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_arrays_give_the_recursive_sqls_parent_depth_and_self_time(seed):
    rows = _forest(seed)
    table = pa.Table.from_pylist([{**r, "_row": i} for i, r in enumerate(rows)])
    want, got = _by_sql(table), _by_arrays(table)
    assert list(got["parent_service"]) == list(want["parent_service"])
    np.testing.assert_array_equal(got["depth"], want["depth"])
    np.testing.assert_allclose(got["self_time_ms"], want["self_time_ms"], rtol=1e-12, atol=1e-9)
    # the forest has every case: deep chains cut at MAX_DEPTH, cycles (depth 0 though parented), overlaps
    assert want["depth"].max() == span_tree.MAX_DEPTH
    parented = np.array([p is not None for p in want["parent_service"]])
    assert (parented & (want["depth"] == 0)).any()
    latency = table.column("latency_ms").to_numpy()
    assert ((want["self_time_ms"] > 0) & (want["self_time_ms"] < latency)).any()


def test_chunked_columns_and_an_empty_batch():
    rows = _forest(4)
    table = pa.Table.from_pylist([{**r, "_row": i} for i, r in enumerate(rows)])
    chunked = pa.concat_tables([table.slice(0, 100), table.slice(100)])
    assert chunked.column("trace_id").num_chunks == 2
    got, want = _by_arrays(chunked), _by_sql(table)
    np.testing.assert_array_equal(got["depth"], want["depth"])
    assert list(got["parent_service"]) == list(want["parent_service"])
    empty = span_tree.span_context(
        pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.string()), np.array([]), np.array([])
    )
    assert len(empty.parent_row) == len(empty.depth) == len(empty.self_time_ms) == 0


@pytest.mark.skipif(nezha_dir() is None, reason="the shared Nezha dataset is not here (set NEZHA_DATA)")
def test_real_train_ticket_traces_get_the_recursive_sqls_context():
    """Spans nobody here made (Nezha's Train-Ticket day, 10 recorded minutes): the same rows as the SQL."""
    files = sorted(str(p) for p in (nezha_dir() / "rca_data" / "2023-01-30" / "trace").glob("*_trace.csv"))[:10]
    table = duckdb.sql(
        f"""SELECT row_number() OVER () - 1 AS _row, TraceID AS trace_id, SpanID AS span_id,
                   CASE WHEN ParentID = 'root' THEN NULL ELSE ParentID END AS parent_span_id,
                   regexp_replace(PodName, '-[^-]+-[^-]+$', '') AS service, OperationName AS endpoint,
                   make_timestamp((StartTimeUnixNano // 1000)::BIGINT) AS timestamp,
                   Duration / 1000.0 AS latency_ms, 'server' AS kind
            FROM read_csv({files}, header=true)"""
    ).to_arrow_table()
    assert table.num_rows > 10_000
    want, got = _by_sql(table), _by_arrays(table)
    assert list(got["parent_service"]) == list(want["parent_service"])
    np.testing.assert_array_equal(got["depth"], want["depth"])
    np.testing.assert_allclose(got["self_time_ms"], want["self_time_ms"], rtol=1e-9, atol=1e-6)
    assert want["depth"].max() >= 5  # real call trees, many levels deep
