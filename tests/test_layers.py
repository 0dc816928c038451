"""Silver and gold layers (observability.layers) on real bronze Parquet and a real DuckDB."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from observability import bronze, layers, tables
from observability.layers import SampleRates, keep_reason, trace_fraction

T0 = datetime(2026, 3, 2, 4, 0, 30)


def span(trace, sid, parent, service, endpoint, offset_ms, latency, status=200, error=None, kind="server"):
    return dict(
        event_id=uuid.uuid4().hex,
        timestamp=T0 + timedelta(milliseconds=offset_ms),
        service=service,
        endpoint=endpoint,
        status_code=status,
        latency_ms=latency,
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        kind=kind,
        error_message=error,
        attributes=None,
    )


def failing_trace(trace: str) -> list[dict]:
    """gateway(0-100) -> checkout(10-60) -> payments(20-50, 500) and a parallel inventory(30-70);
    checkout's client span to the database (kind client) inside payments' call."""
    return [
        span(trace, "a" * 16, None, "gateway", "/api/pay", 0, 100.0),
        span(trace, "b" * 16, "a" * 16, "checkout", "/checkout", 10, 50.0),
        span(trace, "c" * 16, "b" * 16, "payments", "/charge", 20, 30.0, 500, "card declined: timeout"),
        span(trace, "d" * 16, "a" * 16, "inventory", "/stock", 30, 40.0),
        span(trace, "e" * 16, "c" * 16, "payments", "SELECT cards", 25, 20.0, kind="client"),
    ]


def test_sampling_is_a_fixed_hash_and_biased():
    rates = SampleRates(error=1.0, slow=0.5, normal=0.01)
    ids = [uuid.UUID(int=i).hex for i in range(4000)]
    assert all(0 <= trace_fraction(t) < 1 for t in ids)
    assert trace_fraction(ids[7]) == trace_fraction(ids[7].upper())  # ids are case-insensitive hex
    assert all(keep_reason(t, True, False, rates) == "error" for t in ids)  # every error trace, no cap
    slow = sum(keep_reason(t, False, True, rates) is not None for t in ids) / len(ids)
    normal = sum(keep_reason(t, False, False, rates) is not None for t in ids) / len(ids)
    assert 0.45 < slow < 0.55 and 0.005 < normal < 0.02
    # monotone: a trace kept as normal is kept whatever else a later batch learns about it
    for t in ids:
        if keep_reason(t, False, False, rates):
            assert keep_reason(t, True, True, rates) and keep_reason(t, False, True, rates)
    assert keep_reason(ids[0], True, True, SampleRates(0.0, 0.0, 0.0)) is None


def test_the_batch_sql_keeps_the_traces_keep_reason_keeps_and_for_the_same_reason():
    """compute_layers decides sampling in SQL (KEPT_SQL); keep_reason is the definition."""
    import random

    import duckdb

    rng = random.Random(5)
    ids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(3000)]
    ids = [t.upper() if i % 3 == 0 else t for i, t in enumerate(ids)]  # the hash lowercases
    rows = [(t, rng.choice([200, 503, None]), rng.random() < 0.5, rng.uniform(0, 200), "svc") for t in ids]
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE enriched (trace_id VARCHAR, status_code INT, is_entry_span BOOL, latency_ms DOUBLE, service VARCHAR)"
    )
    con.executemany("INSERT INTO enriched VALUES (?, ?, ?, ?, ?)", rows)
    con.execute("CREATE TABLE thresholds AS SELECT 'svc' AS service, 100.0 AS p99")
    con.execute("CREATE TABLE slas (service VARCHAR, sla_ms DOUBLE)")
    for rates in (SampleRates(), SampleRates(0.7, 0.3, 0.05), SampleRates(0.0, 0.0, 0.0), SampleRates(1.0, 1.0, 1.0)):
        expected = {}
        for t, status, entry, latency, _ in rows:
            reason = keep_reason(t, status is not None and status >= 500, entry and latency > 100.0, rates)
            if reason:
                expected[t] = reason
        got = dict(con.execute(layers.KEPT_SQL, layers._rate_params(rates)).fetchall())
        assert got == expected
    assert 0 < len(expected) == len(ids)


def test_silver_context_self_time_and_error_messages(tmp_path):
    root = tmp_path / "bronze"
    ok_trace, bad_trace = "1" * 32, "2" * 32
    ok = [span(ok_trace, "f" * 16, None, "gateway", "/api/cart", 500, 20.0)]
    bronze.write_events(root, pd.DataFrame(failing_trace(bad_trace) + ok))
    files = [str(f) for f in root.rglob("*.parquet")]
    got = layers.compute_layers(files, [], SampleRates(1.0, 0.0, 0.0))

    silver = got.silver.to_pandas().set_index("span_id")
    assert len(silver) == 6
    row = silver.loc["c" * 16]
    assert (row.parent_service, row.parent_endpoint, row.depth) == ("checkout", "/checkout", 2)
    assert silver.loc["a" * 16].depth == 0 and pd.isna(silver.loc["a" * 16].parent_service)
    assert silver.loc["e" * 16].depth == 3
    # gateway 100 ms, children checkout [10, 60] and inventory [30, 70] overlap: union 60 ms
    assert silver.loc["a" * 16].self_time_ms == pytest.approx(40.0)
    assert silver.loc["c" * 16].self_time_ms == pytest.approx(10.0)  # 30 - the 20 ms database call
    assert silver.loc["e" * 16].self_time_ms == pytest.approx(20.0)  # a leaf
    entry = silver["is_entry_span"].to_dict()
    assert entry["e" * 16] is False or entry["e" * 16] == 0  # a client span is work inside a request
    assert all(entry[s] for s in ("a" * 16, "b" * 16, "c" * 16, "d" * 16, "f" * 16))

    # only error traces kept (slow and normal rates 0), whole
    assert got.kept == {bad_trace: "error"}
    gold = got.gold.to_pandas()
    assert set(gold["span_id"]) == {c * 16 for c in "abcde"} and set(gold["sample_reason"]) == {"error"}
    path = layers.error_path(gold, "c" * 16)
    assert path == ["a" * 16, "b" * 16, "c" * 16]

    errors = got.error_messages
    assert errors.to_dict("records") == [
        dict(
            window_start=datetime(2026, 3, 2, 4, 0),
            service="payments",
            endpoint="/charge",
            error_message="card declined: timeout",
            count=1,
            sample_trace_id=bad_trace,
        )
    ]


def test_an_event_in_the_batch_twice_is_one_silver_row_and_one_error(tmp_path):
    """A replayed range's bronze beside the first copy: every event once in silver, gold and the
    error counts (the batch is deduplicated only when it holds a repeat: the check must see it)."""
    trace = "2" * 32
    events = pd.DataFrame(failing_trace(trace))
    bronze.write_events(tmp_path / "first", events)
    bronze.write_events(tmp_path / "again", events.iloc[2:4])  # the failing payments span and inventory
    files = [str(f) for f in tmp_path.rglob("*.parquet")]
    assert len(files) == 2
    got = layers.compute_layers(files, [], SampleRates(1.0, 0.0, 0.0))
    silver = got.silver.to_pandas()
    assert sorted(silver["span_id"]) == [c * 16 for c in "abcde"]
    assert silver.set_index("span_id").loc["a" * 16].self_time_ms == pytest.approx(40.0)
    assert sorted(got.gold.to_pandas()["span_id"]) == [c * 16 for c in "abcde"]
    assert got.error_messages["count"].tolist() == [1]


def test_a_trace_split_across_batches_keeps_its_context_and_is_kept_whole(tmp_path, settings):
    """The parent arrived in an earlier micro-batch: silver still names it, gold keeps all spans."""
    spans = failing_trace("3" * 32)
    first, second = pd.DataFrame(spans[:2]), pd.DataFrame(spans[2:])  # the failing spans come later
    bronze.write_events(settings.bronze_dir, first)
    files_1 = [str(f) for f in settings.bronze_dir.rglob("*.parquet")]
    errors_1 = layers.write_batch_layers(settings, files_1)
    assert errors_1.empty
    bronze.write_events(settings.bronze_dir, second)
    files_2 = sorted(set(map(str, settings.bronze_dir.rglob("*.parquet"))) - set(files_1))
    errors_2 = layers.write_batch_layers(settings, files_2)
    assert list(errors_2["count"]) == [1]

    silver = layers.read_silver(settings.silver_dir, T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert len(silver) == 5  # each span once, though batch 2 read batch 1's spans for context
    c = silver.set_index("span_id").loc["c" * 16]
    assert (c.parent_service, c.depth) == ("checkout", 2)
    assert sorted(p.name for p in settings.silver_dir.iterdir()) == ["date=2026-03-02"]
    assert {p.name for p in (settings.silver_dir / "date=2026-03-02").iterdir()} == {
        "service=gateway",
        "service=checkout",
        "service=payments",
        "service=inventory",
    }
    gold = layers.read_gold_trace(settings.gold_dir, "3" * 32, T0)
    assert sorted(gold["span_id"]) == [c * 16 for c in "abcde"]  # whole, each span once
    assert layers.error_path(gold, "c" * 16) == ["a" * 16, "b" * 16, "c" * 16]
    # a rerun of a batch (a replay) rewrites the same files: nothing doubles
    layers.write_batch_layers(settings, files_2)
    assert len(layers.read_silver(settings.silver_dir, T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))) == 5
    assert len(list(settings.gold_dir.rglob("*.parquet"))) == 1


def _commit_batch(settings, store, frame: pd.DataFrame) -> list[str]:
    """A micro-batch as the Spark job commits it: its bronze files, and its trace-index
    partials (computed by the source's own code) merged into trace_index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from observability.store import utcnow
    from spark import side_outputs, trace_index

    before = set(map(str, settings.bronze_dir.rglob("*.parquet")))
    bronze.write_events(settings.bronze_dir, frame)
    files = sorted(set(map(str, settings.bronze_dir.rglob("*.parquet"))) - before)
    partials = side_outputs.compute(pa.concat_tables([pq.read_table(f) for f in files]))["traces"]
    store.write(lambda con: trace_index.upsert(con, partials, utcnow()))
    return files


def test_trace_index_narrows_the_context_scan_to_the_split_traces_and_loses_nothing(settings, store):
    """Only traces with spans outside the batch (trace_index counts more) are looked up, within
    their indexed span; the layers come out as with the 10-minute scan."""
    split, whole, far = "4" * 32, "5" * 32, "6" * 32
    spans = failing_trace(split)
    far_spans = failing_trace(far)
    for s in far_spans:
        s["timestamp"] += timedelta(minutes=5)  # inside CONTEXT_SLACK and the same hour: only footers tell it apart
    whole_spans = [span(whole, "f" * 16, None, "gateway", "/api/cart", 200, 20.0)]
    files_far = _commit_batch(settings, store, pd.DataFrame(far_spans))
    files_1 = _commit_batch(settings, store, pd.DataFrame(spans[:2]))
    # batch 2 commits before batch 1's layers are written (they run beside the next batch, and may finish after
    # its commit); batch 1's files have an all-NULL error_message column (typed NULL by this writer), batch 2's not
    files_2 = _commit_batch(settings, store, pd.DataFrame(spans[2:] + whole_spans))

    assert layers.context_window(settings, files_far) is None  # its one trace is whole: no scan at all
    for files in (files_1, files_2):
        lo, hi = layers.context_window(settings, files)
        assert lo <= T0 and hi >= T0 + timedelta(milliseconds=100)  # the split trace's whole span...
        assert hi - lo < timedelta(seconds=5)  # ...and not the 20 minutes around the batch
        assert layers.context_files(settings.bronze_dir, lo, hi) == sorted(files_1 + files_2)

    rates, everything = SampleRates(1.0, 1.0, 0.0), sorted(files_far + files_1 + files_2)  # the slow class's p99 too

    def canon(t):
        return t.to_pandas().sort_values("event_id").reset_index(drop=True)

    for files in (files_1, files_2):
        window = layers.context_window(settings, files)
        narrow = layers.compute_layers(files, layers.context_files(settings.bronze_dir, *window), rates, window=window)
        wide = layers.compute_layers(files, everything, rates)
        assert narrow.kept == wide.kept and wide.kept[split] == "error"
        pd.testing.assert_frame_equal(canon(narrow.silver), canon(wide.silver))
        pd.testing.assert_frame_equal(canon(narrow.gold), canon(wide.gold))
        pd.testing.assert_frame_equal(narrow.error_messages, wide.error_messages)
    layers.write_batch_layers(settings, files_1)
    gold = layers.read_gold_trace(settings.gold_dir, split, T0)
    assert sorted(gold["span_id"]) == [c * 16 for c in "abcde"]  # batch 1's layers saw batch 2's spans


def test_a_trace_the_index_does_not_know_gets_the_whole_slack_scan(settings, store):
    files = _commit_batch(settings, store, pd.DataFrame(failing_trace("7" * 32)))
    bronze.write_events(settings.bronze_dir, pd.DataFrame([span("8" * 32, "a" * 16, None, "gateway", "/x", 0, 1.0)]))
    unindexed = sorted(set(map(str, settings.bronze_dir.rglob("*.parquet"))) - set(files))
    lo, hi = layers.context_window(settings, unindexed)
    assert (lo, hi) == (T0 - layers.CONTEXT_SLACK, T0 + layers.CONTEXT_SLACK)


def test_error_messages_add_up_in_the_table(store):
    row = dict(
        window_start=datetime(2026, 3, 2, 4),
        service="payments",
        endpoint="/charge",
        error_message="timeout",
        count=2,
        sample_trace_id="t1",
    )
    for sample in ("t1", "t2"):
        store.write(
            lambda con, s=sample: layers.insert_error_messages(con, pd.DataFrame([{**row, "sample_trace_id": s}]))
        )
    assert store.fetch_all(f"SELECT count, sample_trace_id FROM {tables.ERROR_MESSAGES}") == [(4, "t1")]


def test_date_partitions_expire_by_whole_days(tmp_path):
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        (tmp_path / f"date={day}").mkdir()
    (tmp_path / "date=garbage").mkdir()
    assert layers.drop_date_partitions(tmp_path, datetime(2026, 3, 3, 0, 0)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-03-03", "date=garbage"]


def assert_layers_of_job(settings, store, events: list[dict], start: datetime, end: datetime) -> None:
    """After a real Spark job run (tests/test_spark_job.py): silver holds every span once with
    its parent's service, gold every error trace whole, error_messages every error text."""
    silver = layers.read_silver(settings.silver_dir, start, end)
    assert sorted(silver["event_id"]) == sorted(e["event_id"] for e in events)
    service_of = {e["span_id"]: e["service"] for e in events}
    children = silver.dropna(subset=["parent_span_id"])
    assert list(children["parent_service"]) == [service_of[p] for p in children["parent_span_id"]]
    assert (silver.loc[silver["parent_span_id"].isna(), "depth"] == 0).all() and silver["depth"].max() >= 2
    spans_per_trace = pd.Series([e["trace_id"] for e in events]).value_counts()
    error_traces = {e["trace_id"] for e in events if e["status_code"] >= 500}
    gold = layers._read(layers.gold_files(settings.gold_dir, start, end), layers.GOLD_COLUMNS, "", [])
    kept = gold.groupby("trace_id").size()
    assert error_traces <= set(kept.index)  # SAMPLE_ERROR_RATE=1.0: every error trace
    assert (kept == spans_per_trace[kept.index]).all()  # each kept whole
    assert set(gold.loc[gold["trace_id"].isin(error_traces), "sample_reason"]) == {"error"}
    n_errors = sum(1 for e in events if e.get("error_message"))
    assert store.fetch_one(f"SELECT sum(count) FROM {tables.ERROR_MESSAGES}")[0] == n_errors
    samples = {r[0] for r in store.fetch_all(f"SELECT sample_trace_id FROM {tables.ERROR_MESSAGES}")}
    assert samples <= set(kept.index)  # each message's sample trace can be rebuilt from gold


def test_a_batchs_layers_over_many_traces_with_context_from_an_earlier_file(tmp_path):
    """The slow class's p99 is the whole batch's, each kept trace whole, a span whose trace is
    in an earlier batch's file still gets its parent, and silver's context columns are what
    ENRICH_SQL (their definition) gives over the same spans."""
    import duckdb

    root, earlier = tmp_path / "bronze", tmp_path / "earlier"
    rows = []
    for i in range(24):
        spans = failing_trace(f"{i:032x}") if i % 4 == 0 else failing_trace(f"{i:032x}")[:2]
        for j, s in enumerate(spans):
            s["latency_ms"] = 10.0 + (i * 7 + j * 3) % 50  # spread: some traces over their service's p99
            s["timestamp"] += timedelta(seconds=i)
            if i % 4 == 0 and j == 2:
                s["status_code"] = 200  # a 500 only in some traces
        rows += spans
    rows.append(span(None, "9" * 16, None, "gateway", "/api/untraced", 900, 5.0, 500, "no trace id"))
    parent = span("f" * 32, "1" * 16, None, "gateway", "/api/late", 0, 80.0)
    child = span("f" * 32, "2" * 16, "1" * 16, "payments", "/charge", 5, 30.0, 503, "late child")
    bronze.write_events(earlier, pd.DataFrame([parent]))
    bronze.write_events(root, pd.DataFrame([*rows, child]))
    files, context = [str(f) for f in root.rglob("*.parquet")], [str(f) for f in earlier.rglob("*.parquet")]
    rates = SampleRates(error=1.0, slow=1.0, normal=0.0)

    got = layers.compute_layers(files, context, rates)
    assert 0 < len(got.kept) < 24 and "slow" in got.kept.values() and "error" in got.kept.values()
    gold = got.gold.to_pandas()
    for trace in got.kept:
        assert len(gold[gold["trace_id"] == trace]) == len(
            [r for r in rows + [parent, child] if r["trace_id"] == trace]
        )
    silver = got.silver.to_pandas().sort_values("event_id").reset_index(drop=True)
    late = silver.set_index("span_id").loc["2" * 16]
    assert (late.parent_service, late.depth) == ("gateway", 1)
    assert len(silver) == len(rows) + 1  # the batch's spans only, not the earlier parent

    con = duckdb.connect()
    con.execute(f"CREATE TABLE ctx AS SELECT * FROM read_parquet({layers._sql_list(files + context)})")
    con.execute(layers.ENRICH_SQL)
    want = con.sql(f"SELECT {', '.join(layers.SILVER_COLUMNS)} FROM enriched ORDER BY event_id").df()
    want = want[want["event_id"].isin(silver["event_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(silver[list(layers.SILVER_COLUMNS)], want, check_dtype=False)


def test_silver_files_written_two_at_a_time_all_land_and_a_failed_one_is_raised(tmp_path):
    """write_silver writes a batch's files on two threads (issue 17): every file holds its
    service's rows in time order; a file that cannot be written fails the call (so the layer
    queue retries the batch) after the others were written."""
    import pyarrow as pa

    spans = [s for k in range(6) for s in failing_trace(f"{k:032x}")]
    rows = pa.Table.from_pandas(pd.DataFrame(spans), preserve_index=False)
    written = layers.write_silver(tmp_path / "silver", rows, "b1")
    assert len(written) == 4
    for path in written:
        part = pd.read_parquet(path)
        assert set(part["service"]) == {path.parent.name.removeprefix("service=")}
        assert part["timestamp"].is_monotonic_increasing
    assert sum(len(pd.read_parquet(p)) for p in written) == len(spans)

    blocked = tmp_path / "blocked"
    (blocked / "date=2026-03-02").mkdir(parents=True)
    (blocked / "date=2026-03-02" / "service=payments").write_text("a file where a folder goes")
    with pytest.raises(OSError):
        layers.write_silver(blocked, rows, "b1")
    assert (blocked / "date=2026-03-02" / "service=gateway" / "part-b1.parquet").is_file()


def test_duckdbs_transient_scan_error_is_computed_again_and_other_errors_are_not(tmp_path, monkeypatch):
    import duckdb

    bronze.write_events(tmp_path / "bronze", pd.DataFrame(failing_trace("6" * 32)))
    files = [str(f) for f in (tmp_path / "bronze").rglob("*.parquet")]
    real, calls = layers._compute_layers, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.CatalogException("Catalog Error: Table Function with name python_arrow_scan does not exist!")
        return real(*args)

    monkeypatch.setattr(layers, "_compute_layers", flaky)
    out = layers.compute_layers(files, [], SampleRates())
    assert len(calls) == 2 and out.silver.num_rows == 5

    def broken(*args):
        raise duckdb.CatalogException("Catalog Error: Table with name nope does not exist!")

    monkeypatch.setattr(layers, "_compute_layers", broken)
    with pytest.raises(duckdb.CatalogException, match="nope"):
        layers.compute_layers(files, [], SampleRates())


def test_silver_splits_by_date_and_service_each_file_in_time_order_ties_as_given(tmp_path):
    """One file per (date, service) holding exactly that day's rows of that service, sorted by
    time with equal times in the order they came; rows without a service or time are not
    written (as pandas' groupby, which the Arrow split replaced, dropped them)."""
    import pyarrow as pa

    rng = np.random.default_rng(3)
    n = 2_000
    start = pd.Timestamp("2026-03-01 23:50:00")
    df = pd.DataFrame(
        {
            "event_id": [f"{i:032x}" for i in range(n)],
            "timestamp": start + pd.to_timedelta(rng.integers(0, 1_200, n), unit="s"),  # across midnight
            "service": rng.choice(["gateway", "pay ments/v2", "cart"], n),
        }
    )
    df.loc[[5, 17], "service"] = None
    df.loc[[9], "timestamp"] = pd.NaT
    rows = pa.Table.from_pandas(df, preserve_index=False)
    written = layers.write_silver(tmp_path / "silver", rows, "b1")
    keyed = df.dropna().assign(date=lambda d: d["timestamp"].dt.strftime("%Y-%m-%d"))
    want = {k: g.sort_values("timestamp", kind="stable") for k, g in keyed.groupby(["date", "service"])}
    assert len(written) == len(want) == 6
    for path in written:
        date = path.parent.parent.name.removeprefix("date=")
        service = unquote(path.parent.name.removeprefix("service="))
        got = pd.read_parquet(path)
        assert got["event_id"].tolist() == want[(date, service)]["event_id"].tolist()
