"""The telemetry generator: call graph, determinism, scenarios and their ground-truth labels, publishing."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise

import pandas as pd
import pytest

from event_generator import topology
from event_generator.cli import main
from event_generator.scenarios import ScenarioSpecError, parse_spec
from observability import tables
from observability.schema import validate_line
from observability.store import Store
from tests.transport_fixtures import read_topic, record_ts, run_cli, summary_counts

START = "2024-05-01T10:00:00Z"
START_MS = int(datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp() * 1000)


def generate(path, *args: str) -> list[dict]:
    assert main(["--to-file", str(path), "--speed", "max", *args]) == 0
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def minute_metrics(events: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(events)
    df["minute"] = (pd.to_datetime(df["timestamp"]) - pd.Timestamp(START)).dt.total_seconds() // 60
    df["server_error"] = df["status_code"] >= 500
    return df.groupby(["service", "minute"]).agg(
        count=("latency_ms", "size"),
        error_rate=("server_error", "mean"),
        p95=("latency_ms", lambda s: s.quantile(0.95)),
    )


def test_topology_is_consistent():
    topology.validate_topology()
    assert set(topology.SERVICES) == {"checkout", "payments", "search", "inventory", "database"}
    assert topology.ancestors("database") == {"inventory", "payments", "search", "checkout"}


def test_call_graph_invariants(data_dir, tmp_path):
    events = generate(
        tmp_path / "g.jsonl",
        "--duration",
        "300",
        "--seed",
        "11",
        "--start",
        START,
        "--anomaly-probability",
        "0",
        "--scenario",
        "error_surge:database@2+1",
    )
    assert len(events) > 5000
    for ev in events[:2000]:
        validate_line(json.dumps(ev).encode(), now_ms=START_MS)
    assert len({e["span_id"] for e in events}) == len(events)
    assert len({e["event_id"] for e in events}) == len(events)
    traces = defaultdict(list)
    for ev in events:
        traces[ev["trace_id"]].append(ev)
    child_5xx = parent_failed = 0
    for spans in traces.values():
        by_id = {s["span_id"]: s for s in spans}
        roots = [s for s in spans if s["parent_span_id"] is None]
        assert len(roots) == 1 and roots[0]["service"] in topology.ROOT_SHARES
        kids = defaultdict(list)
        for s in spans:
            if s["parent_span_id"] is not None:
                parent = by_id[s["parent_span_id"]]  # the parent is in the same trace
                assert s["service"] in topology.CALLS[parent["service"]]
                kids[s["parent_span_id"]].append(s)
        for pid, children in kids.items():
            parent = by_id[pid]
            p_start = datetime.fromisoformat(parent["timestamp"]).timestamp() * 1000
            assert parent["latency_ms"] + 1e-6 >= sum(c["latency_ms"] for c in children)
            for c in children:
                c_start = datetime.fromisoformat(c["timestamp"]).timestamp() * 1000
                assert p_start <= c_start
                assert c_start + c["latency_ms"] <= p_start + parent["latency_ms"] + 1.0  # ms rounding
                if c["status_code"] >= 500:
                    child_5xx += 1
                    parent_failed += parent["status_code"] >= 500
    assert child_5xx > 100
    assert parent_failed / child_5xx > 0.8  # a child's failure usually fails its parent
    checkout = [e for e in events if e["service"] == "checkout" and e["parent_span_id"] is None]
    assert {len(traces[e["trace_id"]]) for e in checkout} == {5}  # checkout -> inventory, payments -> database x2
    messages = {e["error_message"] for e in events if e["error_message"]}
    assert "card declined" in messages and any(m.startswith(("upstream", "timeout calling")) for m in messages)


def test_same_seed_same_events_other_seed_differs(data_dir, tmp_path):
    args = ("--duration", "120", "--start", START, "--scenario", "error_surge:search@0.5+1")
    a = generate(tmp_path / "a.jsonl", "--seed", "42", *args)
    b = generate(tmp_path / "b.jsonl", "--seed", "42", *args)
    c = generate(tmp_path / "c.jsonl", "--seed", "43", *args)
    assert a == b
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a != c
    labels_a = [json.loads(x)["id"] for x in (tmp_path / "a.labels.jsonl").read_text().splitlines()]
    labels_b = [json.loads(x)["id"] for x in (tmp_path / "b.labels.jsonl").read_text().splitlines()]
    assert labels_a == labels_b and labels_a


def test_scenario_faults_are_a_diff_on_the_same_traffic(data_dir, tmp_path):
    """Faults change spans, not the random stream: outside the window the events are identical."""
    clean = generate(
        tmp_path / "clean.jsonl", "--seed", "9", "--duration", "240", "--start", START, "--anomaly-probability", "0"
    )
    faulty = generate(
        tmp_path / "faulty.jsonl",
        "--seed",
        "9",
        "--duration",
        "240",
        "--start",
        START,
        "--anomaly-probability",
        "0",
        "--scenario",
        "error_surge:payments@2+1",
    )
    before = [e for e in clean if e["timestamp"] < "2024-05-01T10:02:00"]
    assert before == [e for e in faulty if e["timestamp"] < "2024-05-01T10:02:00"]
    assert len(clean) == len(faulty)


def test_named_scenarios_are_clearly_visible_and_labelled(data_dir, settings, tmp_path):
    out = tmp_path / "run.jsonl"
    scenarios = [
        "error_surge:payments@6+5",
        "latency_spike:search@16+5",
        "traffic_drop:checkout@26+5",
        "cascade:database@36+5",
        "latency_drift:search@46+14",
    ]
    args = ["--rate", "6", "--seed", "3", "--start", START, "--duration", str(60 * 60), "--anomaly-probability", "0"]
    for s in scenarios:
        args += ["--scenario", s]
    m = minute_metrics(generate(out, *args))

    def window(service, lo, hi):
        return m.loc[service].loc[lo : hi - 1]

    def before(service, start):
        return m.loc[service].loc[start - 5 : start - 1]

    # error surge: payments fails 20-40% of requests (was ~0.5%), every minute of the window
    assert (window("payments", 6, 11)["error_rate"] >= 0.15).all()
    assert (before("payments", 6)["error_rate"] < 0.04).all()
    # latency spike: search p95 3.5-5.5x
    assert (window("search", 16, 21)["p95"] >= 3 * before("search", 16)["p95"].median()).all()
    # traffic drop: checkout loses 70-90% of its requests
    assert (window("checkout", 26, 31)["count"] <= 0.35 * before("checkout", 26)["count"].median()).all()
    # cascade: the database fault shows in every caller, up to the entry services
    for service in topology.SERVICES:
        assert (window(service, 36, 41)["error_rate"] >= 0.15).all(), service
    assert (window("database", 36, 41)["p95"] >= 2.5 * before("database", 36)["p95"].median()).all()
    # drift: gradual, ending >= 3x
    drift = window("search", 46, 60)["p95"] / before("search", 46)["p95"].median()
    assert drift.iloc[0] < 1.8 and drift.iloc[-3:].min() >= 3.0
    assert drift.iloc[:10].is_monotonic_increasing or (drift.iloc[:10].diff().dropna() > -0.3).all()

    file_rows = [json.loads(x) for x in (tmp_path / "run.labels.jsonl").read_text().splitlines()]
    table = Store.from_settings(settings).fetch_df(f"SELECT * FROM {tables.SCENARIO_LABELS}")
    assert sorted(table["id"]) == sorted(r["id"] for r in file_rows)
    shown = defaultdict(set)
    for r in file_rows:
        shown[(r["scenario_type"], r["root_service"])].add(r["service"])
    assert shown[("error_surge", "payments")] == {"payments", "checkout"}
    assert shown[("latency_spike", "search")] == {"search"}
    assert shown[("traffic_drop", "checkout")] == {"checkout", "inventory", "payments", "database"}
    assert shown[("cascade", "database")] == set(topology.SERVICES)
    assert shown[("latency_drift", "search")] == {"search"}
    cascade = table[table["scenario_type"] == "cascade"]
    assert set(cascade["root_service"]) == {"database"}
    assert (cascade["start_time"] == pd.Timestamp("2024-05-01T10:36:00")).all()
    assert (cascade["end_time"] == pd.Timestamp("2024-05-01T10:41:00")).all()


def test_random_scenarios_follow_anomaly_probability(data_dir, settings, tmp_path):
    out = tmp_path / "r.jsonl"
    generate(
        out,
        "--rate",
        "0.5",
        "--seed",
        "5",
        "--start",
        START,
        "--duration",
        str(3 * 3600),
        "--anomaly-probability",
        "0.25",
    )
    rows = [json.loads(x) for x in (tmp_path / "r.labels.jsonl").read_text().splitlines()]
    windows = sorted({(r["start_time"], r["end_time"], r["scenario_id"]) for r in rows})
    assert len(windows) >= 4
    for (_, end, _), (start, _, _) in pairwise(windows):
        gap = datetime.fromisoformat(start) - datetime.fromisoformat(end)
        assert gap.total_seconds() >= 15 * 60  # one at a time, with a quiet gap
    assert all(r["origin"] == "random" for r in rows)
    assert {r["root_service"] for r in rows if r["service"] == r["root_service"]} <= set(topology.SERVICES)
    n_table = Store.from_settings(settings).fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}")[0]
    assert n_table == len(rows)

    generate(
        tmp_path / "none.jsonl",
        "--rate",
        "0.5",
        "--seed",
        "5",
        "--start",
        START,
        "--duration",
        "3600",
        "--anomaly-probability",
        "0",
    )
    assert not (tmp_path / "none.labels.jsonl").exists()


def test_clean_traffic_is_calm_and_follows_the_day(data_dir, tmp_path):
    day = generate(
        tmp_path / "peak.jsonl",
        "--rate",
        "5",
        "--seed",
        "8",
        "--start",
        "2024-05-01T14:40:00Z",
        "--duration",
        "2400",
        "--anomaly-probability",
        "0",
    )
    night = generate(
        tmp_path / "night.jsonl",
        "--rate",
        "5",
        "--seed",
        "8",
        "--start",
        "2024-05-01T02:30:00Z",
        "--duration",
        "600",
        "--anomaly-probability",
        "0",
    )
    assert len(day) / 4 > 2 * len(night)  # peak ~15:00 UTC, trough ~03:00 UTC
    m = minute_metrics(day)
    for service in topology.SERVICES:
        s = m.loc[service]
        assert (s["error_rate"] < 0.06).all(), service
        assert (s["p95"] / s["p95"].median()).between(0.75, 1.3).all(), service
        assert (s["count"] / s["count"].rolling(9, center=True, min_periods=1).median()).between(0.75, 1.3).all()


def test_scenario_spec_parsing():
    assert parse_spec("error_surge:payments@30") == parse_spec("error_surge:payments@30+10")
    spec = parse_spec("latency_drift:search@1.5+25")
    assert (spec.type, spec.service, spec.start_min, spec.duration_min) == ("latency_drift", "search", 1.5, 25.0)
    for bad in ("error_surge:payments", "boom:payments@3", "error_surge:nosuch@3", "error_surge:payments@x"):
        with pytest.raises(ScenarioSpecError):
            parse_spec(bad)


def test_bad_arguments_exit_2_with_a_message(data_dir, capsys):
    for argv in (["--scenario", "boom:payments@3", "--duration", "5"], ["--speed", "max"], ["--rate", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "unknown type 'boom'" in capsys.readouterr().err


def test_cli_duration_60_publishes_to_the_transport(backend_settings):
    settings = backend_settings
    before_ms = int(time.time() * 1000)  # the CLI's "now" is after this: its default start is 60 s before it
    proc = run_cli("--duration", "60", "--speed", "max", "--seed", "1", "--scenario", "error_surge:search@0+1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = summary_counts(proc.stdout, "generator summary")
    assert counts["published"] > 1000 and counts["scenarios"] >= 1
    records = read_topic(settings, settings.raw_events_topic, counts["published"])
    assert len(records) == counts["published"]
    partition_of_trace = {}
    now_ms = int(time.time() * 1000)
    for rec in records:
        ev = validate_line(rec.value, now_ms=now_ms)
        assert rec.key == ev.trace_id.encode()
        assert record_ts(rec) == ev.timestamp_ms
        # default start: the last --duration seconds before the CLI started, however long the run and read took
        assert before_ms - 60_000 <= ev.timestamp_ms <= now_ms + 1000
        assert partition_of_trace.setdefault(ev.trace_id, rec.partition) == rec.partition  # a trace in one partition
    labels = Store.from_settings(settings).fetch_df(f"SELECT * FROM {tables.SCENARIO_LABELS}")
    assert "search" in set(labels["service"])
    assert (settings.data_dir / "labels" / "scenario_labels.jsonl").exists()


def test_realtime_speed_paces_event_time_by_the_wall_clock(data_dir, settings):
    started = time.monotonic()
    proc = run_cli("--duration", "3", "--seed", "2", "--anomaly-probability", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - started >= 2.5
    counts = summary_counts(proc.stdout, "generator summary")
    records = read_topic(settings, settings.raw_events_topic, counts["published"])
    assert len(records) == counts["published"] > 0
    assert abs(min(record_ts(r) for r in records) / 1000 - time.time()) < 60
