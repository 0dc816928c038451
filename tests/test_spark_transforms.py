"""Unit tests of the Spark job's pure parts: window transforms (local Spark session),
side outputs (trace samples, call edges, late rows), offset planning, parsing, the sink."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from observability.schema import validate_line
from spark import side_outputs
from spark.checkpoint import batch_watermark_ms, query_id
from spark.source import AGGREGATION_FIELDS, EVENT_SCHEMA, plan_end
from spark.staging import BRONZE_SCHEMA, RangeParser, validate_fast
from tests.spark_fixtures import INVALID_LINES, events_frame, expected_metrics, make_events, rank_error

T0 = datetime(2024, 5, 1, 12, 0, 0)


@pytest.fixture(scope="module")
def spark_session(tmp_path_factory):
    """One local session for this module's tests (stopped before the job tests start their own)."""
    from observability.settings import Settings
    from spark.session import build_session

    settings = Settings(DATA_DIR=str(tmp_path_factory.mktemp("spark-unit")))
    spark = build_session(settings, app_name="spark-unit-tests")
    yield spark
    spark.stop()


def _events_df(spark, rows):
    """Rows of (timestamp, service, endpoint, status, latency[, kind, parent_span_id]); server roots by default."""
    return spark.createDataFrame(_events_pdf(rows), EVENT_SCHEMA)


def _events_pdf(rows) -> pd.DataFrame:
    rows = [tuple(r) + (None,) * (7 - len(r)) for r in rows]
    pdf = pd.DataFrame(rows, columns=list(AGGREGATION_FIELDS))
    pdf["kind"] = pdf["kind"].fillna("server")
    return pdf


def _windows(spark, rows, path: str) -> pd.DataFrame:
    """The window rows of these events by the reference transform over the events ("events") or
    the job's own path: the source's partials of one range, merged in Spark ("partials")."""
    from spark.partials import PARTIAL_SCHEMA, window_partials
    from spark.transforms import window_metrics, window_metrics_from_partials

    if path == "events":
        return window_metrics(_events_df(spark, rows)).toPandas()
    table = pa.Table.from_pandas(_events_pdf(rows), preserve_index=False)
    partials = spark.createDataFrame(window_partials(table).to_pandas(), PARTIAL_SCHEMA)
    return window_metrics_from_partials(partials).toPandas()


@pytest.mark.parametrize("path", ["events", "partials"])
def test_window_metrics_counts_errors_and_levels(spark_session, path):
    s = timedelta(seconds=1)
    rows = [
        (T0 + 0 * s, "api", "/a", 200, 10.0),
        (T0 + 10 * s, "api", "/a", 500, 30.0),
        (T0 + 20 * s, "api", "/b", 404, 20.0),
        (T0 + 59 * s, "api", "/b", 503, 40.0),
        (T0 + 60 * s, "api", "/a", 200, 5.0),  # next window: [12:01, 12:02)
        (T0 + 30 * s, "db", "/q", 429, 1.0),
    ]
    out = _windows(spark_session, rows, path)

    def key(svc, ep, ws):
        by_endpoint = out.endpoint.isna() if ep is None else out.endpoint == ep
        return out[(out.service == svc) & by_endpoint & (out.window_start == ws)].iloc[0]

    api = key("api", None, T0)
    assert api.window_end == T0 + 60 * s
    assert (api.request_count, api.error_count, api.client_error_count) == (4, 2, 1)
    assert api.error_rate == pytest.approx(0.5)
    assert api.avg_latency_ms == pytest.approx(25.0)
    assert api.max_latency_ms == 40.0
    assert api.p50_latency_ms in (20.0, 30.0)
    assert api.p99_latency_ms == 40.0
    a = key("api", "/a", T0)
    assert (a.request_count, a.error_count, a.client_error_count) == (2, 1, 0)
    b = key("api", "/b", T0)
    assert (b.request_count, b.error_count, b.client_error_count) == (2, 1, 1)
    nxt = key("api", None, T0 + 60 * s)
    assert nxt.request_count == 1 and nxt.error_count == 0 and nxt.error_rate == 0.0
    db = key("db", None, T0)
    assert (db.request_count, db.error_count, db.client_error_count) == (1, 0, 1)
    # service level + endpoint level rows, nothing else
    assert len(out) == 3 + 4


def test_window_metrics_match_duckdb_and_percentiles_within_error(spark_session):
    from spark.partials import LATENCY_SKETCH_K, PERCENTILE_RANK_ERROR
    from spark.transforms import window_metrics

    events = make_events(6000, int(T0.timestamp() * 1000), 180_000, seed=3)
    df = events_frame(events).assign(kind="server")[list(AGGREGATION_FIELDS)]
    got = window_metrics(spark_session.createDataFrame(df, EVENT_SCHEMA)).toPandas()
    for by_endpoint in (False, True):
        exp = expected_metrics(events, by_endpoint=by_endpoint)
        sub = got[got.endpoint.notna()] if by_endpoint else got[got.endpoint.isna()]
        keys = ["window_start", "service"] + (["endpoint"] if by_endpoint else [])
        m = exp.merge(sub, on=keys, how="outer", indicator=True)
        assert (m["_merge"] == "both").all()
        assert (m.request_count_x == m.request_count_y).all()
        assert (m.error_count_x == m.error_count_y).all()
        assert (m.client_error_count_x == m.client_error_count_y).all()
        assert np.allclose(m.avg_latency_ms_x, m.avg_latency_ms_y, rtol=1e-9)
        assert (m.max_latency_ms_x == m.max_latency_ms_y).all()
    # each percentile is a value of the window; exact (its rank brackets the target) while the window
    # holds at most LATENCY_SKETCH_K latencies, within the sketch's rank error beyond
    for _, row in got[got.endpoint.isna()].iterrows():
        lat = df[
            (df.service == row.service) & (df.timestamp >= row.window_start) & (df.timestamp < row.window_end)
        ].latency_ms
        for q, col in ((0.5, "p50_latency_ms"), (0.95, "p95_latency_ms"), (0.99, "p99_latency_ms")):
            bound = 0.0 if len(lat) <= LATENCY_SKETCH_K else PERCENTILE_RANK_ERROR + 1.0 / len(lat)
            assert lat.isin([row[col]]).any() and rank_error(lat, row[col], q) <= bound, (row.service, col)


def _partials_df(spark, events: list[dict], ranges: int):
    """The events cut into `ranges` consecutive offset ranges, each turned into partials as the
    source does (`spark.partials.window_partials` over the range's bronze rows)."""
    from observability.transport.base import Record
    from spark.partials import PARTIAL_SCHEMA, window_partials
    from spark.staging import parse_records

    records = (Record("raw", 0, i, 0, None, json.dumps(e).encode()) for i, e in enumerate(events))
    rows = parse_records("raw", records).valid_table()
    cut = np.linspace(0, rows.num_rows, ranges + 1).astype(int)
    parts = pa.concat_tables([window_partials(rows.slice(a, b - a)) for a, b in itertools.pairwise(cut)])
    return spark.createDataFrame(parts.to_pandas(), PARTIAL_SCHEMA)


def test_partials_merged_across_ranges_give_the_events_windows(spark_session):
    """The job's path (partials per offset range, merged in Spark) gives exactly the rows of the
    window transform over the events themselves: counts, sums, maxima and percentiles, at the
    service and endpoint level, with child spans left out and windows split over ranges."""
    from spark.transforms import window_metrics, window_metrics_from_partials

    kinds = ("server", "client", "internal", "producer", "consumer")
    events = [
        e | {"kind": kinds[i % 5]}
        for i, e in enumerate(make_events(4000, int(T0.timestamp() * 1000), 180_000, seed=11))
    ]
    rows = events_frame(events)[list(AGGREGATION_FIELDS)]
    keys = ["window_start", "service", "endpoint"]
    direct = window_metrics(spark_session.createDataFrame(rows, EVENT_SCHEMA)).toPandas()
    merged = window_metrics_from_partials(_partials_df(spark_session, events, ranges=7)).toPandas()
    direct, merged = (d.sort_values(keys, na_position="first").reset_index(drop=True) for d in (direct, merged))
    assert len(direct) == len(merged) > 20 and direct.endpoint.isna().any() and direct.endpoint.notna().any()
    for col in ("window_start", "window_end", "service", "endpoint", "request_count", "error_count"):
        assert direct[col].equals(merged[col]), col
    for col in ("client_error_count", "max_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms"):
        assert direct[col].equals(merged[col]), col
    assert np.allclose(direct.avg_latency_ms, merged.avg_latency_ms, rtol=1e-12)
    assert np.allclose(direct.error_rate, merged.error_rate, rtol=1e-12)


@pytest.mark.parametrize("path", ["events", "partials"])
def test_request_metrics_count_entry_spans_only(spark_session, path):
    """SERVER and CONSUMER spans and roots of any kind are requests; CLIENT, INTERNAL and
    PRODUCER child spans are not (they stay in bronze and traces)."""
    s = timedelta(seconds=1)
    p = "0123456789abcdef"
    rows = [
        (T0, "api", "/a", 200, 100.0, "server", None),  # root server span
        (T0 + s, "api", "GET", 500, 90.0, "client", p),  # its outgoing call: not a request
        (T0 + s, "api", "render", 200, 5.0, "internal", p),  # work inside it: not a request
        (T0 + s, "api", "publish", 503, 2.0, "producer", p),  # a message it sent: not a request
        (T0 + 2 * s, "worker", "orders", 500, 40.0, "consumer", p),  # a consumed message: a request
        (T0 + 3 * s, "worker", "/b", 200, 20.0, "server", p),  # a server span with a parent: a request
        (T0 + 4 * s, "cron", "nightly", 200, 7.0, "internal", None),  # a root of any kind: a request
        (T0 + 5 * s, "cron", "GET", 200, 3.0, "client", None),  # a root client span: a request
    ]
    out = _windows(spark_session, rows, path)
    svc = out[out.endpoint.isna()].set_index("service")
    assert svc.request_count.to_dict() == {"api": 1, "worker": 2, "cron": 2}
    assert svc.error_count.to_dict() == {"api": 0, "worker": 1, "cron": 0}
    assert svc.loc["api", "max_latency_ms"] == 100.0 and svc.loc["api", "avg_latency_ms"] == 100.0
    endpoints = out[out.endpoint.notna()]
    assert sorted(zip(endpoints.service, endpoints.endpoint, strict=True)) == [
        ("api", "/a"),
        ("cron", "GET"),
        ("cron", "nightly"),
        ("worker", "/b"),
        ("worker", "orders"),
    ]


def test_dependency_edges_from_database_client_spans():
    """A CLIENT span with db.system is a call to that database; other client spans
    (no db.system) and non-client spans with db.system make no such edge."""

    def with_attrs(event, kind, attrs):
        return {**event, "kind": kind, "attributes": attrs}

    events = [
        _span(_tid(1), _sid(1), None, "orders", 200, 50.0),
        with_attrs(_span(_tid(1), _sid(2), _sid(1), "orders", 200, 9.0), "client", {"db.system": "postgresql"}),
        with_attrs(_span(_tid(1), _sid(3), _sid(1), "orders", 500, 9.0), "CLIENT", {"db.system": "postgresql"}),
        with_attrs(
            _span(_tid(1), _sid(4), _sid(1), "orders", 200, 1.0),
            "client",
            {"db.system.name": "redis", "db.system": "redis"},
        ),
        with_attrs(_span(_tid(1), _sid(5), _sid(1), "orders", 200, 1.0), "client", {"http.request.method": "GET"}),
        with_attrs(_span(_tid(1), _sid(6), _sid(1), "orders", 200, 1.0), "internal", {"db.system": "sqlite"}),
        # the http client span's callee (another service) makes the usual parent/child edge
        _span(_tid(1), _sid(7), _sid(5), "stock", 200, 1.0),
        with_attrs(_span(_tid(2), _sid(8), None, "stock", 200, 3.0, second=61), "client", {"db.system": "postgresql"}),
    ]
    edges = side_outputs.compute(_valid_table(events))["edges"]
    w0, w1 = int(T0.timestamp() * 1000), int(T0.timestamp() * 1000) + 60_000
    assert sorted(map(tuple, edges)) == sorted(
        [
            (w0, "orders", "postgresql", 2, 1),
            (w0, "orders", "redis", 1, 0),
            (w0, "orders", "stock", 1, 0),
            (w1, "stock", "postgresql", 1, 0),
        ]
    )


def _valid_table(events: list[dict]) -> pa.Table:
    parser = RangeParser("raw_events")
    from observability.transport.base import Record

    for i, e in enumerate(events):
        parser.add(Record("raw_events", 0, i, 0, None, json.dumps(e).encode()), wall_ms=2**62)
    return parser.valid_table()


def _span(trace, span, parent, service, status, latency, second=0):
    return {
        "timestamp": (T0 + timedelta(seconds=second)).isoformat() + "Z",
        "service": service,
        "endpoint": "/x",
        "status_code": status,
        "latency_ms": latency,
        "trace_id": trace,
        "span_id": span,
        "parent_span_id": parent,
    }


def _tid(i: int) -> str:
    return f"{i:032x}"


def _sid(i: int) -> str:
    return f"{i:016x}"


def test_trace_samples_keep_errors_slowest_and_a_normal_share():
    events = []
    # 30 error traces (cap 20, earliest first), 100 normal traces with rising latency
    for i in range(30):
        events.append(_span(_tid(i), _sid(i), None, "api", 500, 5.0, second=i))
    for i in range(100, 1100):
        events.append(_span(_tid(i), _sid(i), None, "api", 200, float(i), second=40))
    side = side_outputs.compute(_valid_table(events))
    samples = pd.DataFrame(side["samples"], columns=list(side_outputs.SAMPLE_COLUMNS))
    errors = samples[samples.reason == "error"]
    assert sorted(errors.trace_id) == sorted(_tid(i) for i in range(20))  # the 20 earliest of 30
    slow = samples[samples.reason == "slow"]
    assert sorted(slow.trace_id) == sorted(_tid(i) for i in range(1095, 1100))  # the 5 slowest
    normal = samples[samples.reason == "normal"]
    assert 0 < len(normal) <= side_outputs.NORMAL_SAMPLE_CAP + side_outputs.SLOW_SAMPLE_COUNT
    assert not set(normal.trace_id) & set(slow.trace_id) and not set(normal.trace_id) & set(errors.trace_id)
    # deterministic: the same input gives the same sample
    again = side_outputs.compute(_valid_table(events))["samples"]
    assert again == side["samples"]
    assert samples.window_start_ms.unique().tolist() == [int(T0.timestamp() * 1000)]


def test_dependency_edges_join_parent_and_child_spans():
    events = [
        _span(_tid(1), _sid(1), None, "gateway", 200, 50.0),
        _span(_tid(1), _sid(2), _sid(1), "checkout", 200, 30.0),
        _span(_tid(1), _sid(3), _sid(2), "payments", 503, 20.0),
        _span(_tid(1), _sid(4), _sid(2), "checkout", 200, 1.0),  # same-service child: no edge
        _span(_tid(2), _sid(5), None, "gateway", 200, 50.0),
        _span(_tid(2), _sid(6), _sid(5), "checkout", 500, 30.0, second=61),  # next window (child's)
        _span(_tid(3), _sid(7), _sid(1), "payments", 200, 1.0),  # parent id of another trace: no edge
    ]
    edges = side_outputs.compute(_valid_table(events))["edges"]
    w0, w1 = int(T0.timestamp() * 1000), int(T0.timestamp() * 1000) + 60_000
    assert sorted(map(tuple, edges)) == sorted(
        [
            (w0, "gateway", "checkout", 1, 0),
            (w0, "checkout", "payments", 1, 1),
            (w1, "gateway", "checkout", 1, 1),
        ]
    )


def test_late_rows_are_those_of_windows_closed_by_the_watermark():
    counts = [[0, 5], [60_000, 7], [120_000, 11]]
    assert side_outputs.late_rows(counts, 0) == 0
    assert side_outputs.late_rows(counts, 60_000) == 5  # window [0, 60s) ends at the watermark
    assert side_outputs.late_rows(counts, 150_000) == 12


def test_plan_end_caps_a_batch_fairly():
    start = {"0": 0, "1": 100, "2": 50}
    latest = {"0": 1000, "1": 110, "2": 50, "3": 400}
    assert plan_end(start, latest, None) == latest
    end = plan_end(start, latest, 300)
    assert sum(end[p] - start.get(p, 0) for p in end) == 300
    assert end["1"] == 110 and end["2"] == 50  # a short backlog is taken whole
    assert end["0"] - 0 == 145 and end["3"] == 145  # the rest is shared
    assert all(end[p] <= latest[p] for p in latest)
    assert plan_end({"0": 5}, {"0": 5}, 10) == {"0": 5}


def test_validate_fast_judges_like_validate_line():
    now = 1_800_000_000_000
    good = json.dumps(
        {
            "timestamp": "2024-01-01T00:00:00Z",
            "service": "a",
            "status_code": 200,
            "latency_ms": 3,
            "attributes": {"k": [1, 2]},
            "trace_id": "AB" * 16,
        }
    ).encode()
    fast, _ = validate_fast(good, now)
    assert replace(fast, event_id="x") == replace(validate_line(good, now_ms=now), event_id="x")
    extra = [
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "a", "status_code": 123456789012345678901234567890, "latency_ms": 1}',
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "a", "status_code": 200, "latency_ms": 1e400}',
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "\\ud800", "status_code": 200, "latency_ms": 1}',
    ]
    for line in [raw for raw, _ in INVALID_LINES] + extra:
        expected = _verdict(lambda line=line: validate_line(line, now_ms=now))
        assert _verdict(lambda line=line: validate_fast(line, now)[0]) == expected, line


def _verdict(fn):
    try:
        ev = fn()
        return ("ok", ev.timestamp_ms, ev.status_code, ev.latency_ms)
    except ValueError as exc:
        return ("rejected", str(exc))


def test_parser_is_deterministic_and_stores_any_valid_line():
    from observability.transport.base import Record

    lines = [
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "a", "status_code": 200, "latency_ms": 1}',
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "b\\ud800", "status_code": 200, "latency_ms": 1,'
        b' "attributes": {"k": "\\udc00"}}',
        b'{"timestamp": "2024-01-01T00:00:00Z", "service": "c", "status_code": 200, "latency_ms": 1, "event_id": "ab12"}',
    ]

    def parse():
        parser = RangeParser("raw_events")
        for i, line in enumerate(lines):
            parser.add(Record("raw_events", 2, 40 + i, 1_800_000_000_000, None, line), wall_ms=0)
        return parser.valid_table()

    first, second = parse(), parse()
    assert first.num_rows == 3 and first.equals(second)  # replays stage the same rows (event ids too)
    ids = first.column("event_id").to_pylist()
    assert ids[2] == "ab12" and len(ids[0]) == 32 and ids[0] != ids[1]
    assert first.column("service").to_pylist()[1] == "b\ufffd"


def test_bronze_schema_is_the_bronze_layout():
    from observability.bronze import BRONZE_COLUMNS

    assert tuple(BRONZE_SCHEMA.names) == BRONZE_COLUMNS


def test_checkpoint_helpers(tmp_path):
    assert query_id(tmp_path) is None and batch_watermark_ms(tmp_path, 0) == 0
    (tmp_path / "metadata").write_text('{"id":"abc-123"}')
    (tmp_path / "offsets").mkdir()
    (tmp_path / "offsets" / "3").write_text('v1\n{"batchWatermarkMs":1234,"batchTimestampMs":5}\n{"0":10}\n')
    assert query_id(tmp_path) == "abc-123"
    assert batch_watermark_ms(tmp_path, 3) == 1234
    assert batch_watermark_ms(tmp_path, -1) == 0


def _metrics_rows(count: int, endpoint=None) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "window_start": T0,
                "window_end": T0 + timedelta(minutes=1),
                "service": "api",
                "endpoint": endpoint,
                "request_count": count,
                "error_count": 1,
                "client_error_count": 0,
                "error_rate": 1 / count,
                "avg_latency_ms": 1.0,
                "p50_latency_ms": 1.0,
                "p95_latency_ms": 1.0,
                "p99_latency_ms": 1.0,
                "max_latency_ms": 1.0,
            }
        ]
    )


def test_sink_is_exactly_once_per_batch_and_refines_windows(store):
    from spark.sink import BatchOutput, DuckDBSink

    sink = DuckDBSink(store, "metrics:test", side_outputs.SAMPLE_CAPS)
    w = T0
    samples = pd.DataFrame(
        {
            "window_start": [w] * 25,
            "service": ["api"] * 25,
            "trace_id": [_tid(i) for i in range(25)],
            "reason": ["error"] * 25,
            "sort_key": [float(i) for i in range(25)],
        }
    )
    deps = pd.DataFrame(
        {"window_start": [w], "parent_service": ["gw"], "child_service": ["api"], "call_count": [3], "error_count": [1]}
    )
    dead = pd.DataFrame(
        {
            "received_at_ms": [1_700_000_000_000],
            "source": ["spark:raw_events:0:1"],
            "reason": ["json: bad"],
            "payload": ["x"],
        }
    )
    out = BatchOutput(
        0,
        _metrics_rows(10),
        samples=samples.iloc[:15],
        dependencies=deps,
        dead_letters=dead,
        rows_in=11,
        rows_rejected=1,
    )
    assert not sink.is_committed(0)
    assert sink.write_batch(out) is True
    assert sink.is_committed(0) and not sink.is_committed(1)  # past what this process wrote: not committed
    assert DuckDBSink(store, "metrics:test", {}).is_committed(0), "a fresh process asks the table"
    assert sink.write_batch(out) is False  # a replayed batch writes nothing
    assert store.fetch_one("SELECT count(*) FROM dead_letter")[0] == 1
    assert store.fetch_one("SELECT call_count FROM service_dependencies")[0] == 3
    # batch 1 refines the window (upsert), adds edges, and keeps the error-sample cap
    out1 = BatchOutput(
        1, pd.concat([_metrics_rows(12), _metrics_rows(7, "/a")]), samples=samples.iloc[15:], dependencies=deps
    )
    assert sink.write_batch(out1) is True
    assert store.fetch_all("SELECT request_count FROM service_metrics") == [(12,)]
    assert store.fetch_all("SELECT endpoint, request_count FROM endpoint_metrics") == [("/a", 7)]
    assert store.fetch_one("SELECT call_count, error_count FROM service_dependencies") == (6, 2)
    kept = {r[0] for r in store.fetch_all("SELECT trace_id FROM trace_samples")}
    assert kept == {_tid(i) for i in range(20)}
    assert store.fetch_all("SELECT sink, batch_id FROM sink_commits ORDER BY batch_id") == [
        ("metrics:test", 0),
        ("metrics:test", 1),
    ]
