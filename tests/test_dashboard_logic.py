"""The dashboard's SQL downsampling and pure derivations, against independent computations."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from dashboard import charts, queries
from dashboard.ranges import RANGES
from dashboard.status import DEGRADED, HEALTHY, INCIDENT, format_duration, lag_level, pipeline_lag, service_statuses
from dashboard.traces import waterfall_rows
from observability import tables
from observability.store import utcnow
from tests.dashboard_fixtures import seed_dashboard
from tests.seeding import seed_metrics


def test_downsampled_series_match_pandas(store):
    now = utcnow().replace(second=0, microsecond=0)
    df = seed_metrics(store, services=("alpha", "beta"), start=now - timedelta(hours=5), minutes=300, seed=3)
    # a gap: windows missing for 20 minutes must not dilute the rate
    store.execute(
        f"DELETE FROM {tables.SERVICE_METRICS} WHERE service = 'beta' AND window_start >= ? AND window_start < ?",
        [now - timedelta(minutes=200), now - timedelta(minutes=180)],
    )
    df = df[
        ~(
            (df.service == "beta")
            & (df.window_start >= now - timedelta(minutes=200))
            & (df.window_start < now - timedelta(minutes=180))
        )
    ]

    tr = RANGES["7d"]  # 30-minute buckets
    got = queries.service_series(store, tr, now).set_index(["service", "bucket"]).sort_index()

    df = df.assign(bucket=df.window_start.dt.floor("30min"))
    g = df.groupby(["service", "bucket"])
    expected = pd.DataFrame(
        {
            "request_rate": g.request_count.sum() / (g.size() * 60.0),
            "error_rate": g.error_count.sum() / g.request_count.sum(),
            "p95_latency_ms": g.apply(
                lambda x: (x.p95_latency_ms * x.request_count).sum() / x.request_count.sum(), include_groups=False
            ),
        }
    ).sort_index()
    assert len(got) == len(expected) <= 2 * 11
    for col in expected.columns:
        assert got[col].to_numpy() == pytest.approx(expected[col].to_numpy(), rel=1e-9), col


def test_range_excludes_older_windows(store):
    now = utcnow().replace(second=0, microsecond=0)
    seed_metrics(store, services=("alpha",), start=now - timedelta(hours=3), minutes=180)
    got = queries.service_series(store, RANGES["1h"], now)
    assert len(got) in (60, 61) and got.bucket.min() >= now - timedelta(hours=1)


def _incidents(rows):
    cols = ["service", "peak_severity", "started_at", "root_cause_service", "related_services"]
    return pd.DataFrame(rows, columns=cols)


def test_statuses_come_from_data_only():
    now = utcnow()
    snapshot = pd.DataFrame(
        {
            "service": ["a", "b", "c"],
            "last_window": [now] * 3,
            "request_rate": [1.0, 2.0, None],
            "error_rate": [0.0, 0.1, None],
            "p95_latency_ms": [10.0, 20.0, None],
        }
    )
    open_incidents = _incidents([("b", "high", now, "never-seen-db", ["c"])])
    recent = pd.DataFrame({"service": ["a"], "anomalies": [2], "max_score": [0.7], "last_anomaly": [now]})
    statuses = {s.service: s for s in service_statuses(snapshot, open_incidents, recent)}
    assert statuses["b"].status == INCIDENT
    assert statuses["never-seen-db"].status == INCIDENT and statuses["never-seen-db"].request_rate is None
    assert statuses["a"].status == DEGRADED and "2 anomalies" in statuses["a"].reason
    assert statuses["c"].status == DEGRADED
    assert [s.service for s in service_statuses(snapshot, _incidents([]), recent.iloc[0:0])] == ["a", "b", "c"]
    assert all(s.status == HEALTHY for s in service_statuses(snapshot, _incidents([]), recent.iloc[0:0]))


def test_waterfall_orders_call_tree_and_keeps_orphans_and_cycles():
    t0 = pd.Timestamp("2026-01-01 00:00:00")
    spans = pd.DataFrame(
        [
            ("root", None, "gw", 0, 100),
            ("late-child", "root", "b", 50, 10),
            ("early-child", "root", "a", 10, 30),
            ("grandchild", "early-child", "db", 12, 5),
            ("orphan", "missing-parent", "x", 20, 1),
            ("cyc1", "cyc2", "y", 30, 1),
            ("cyc2", "cyc1", "z", 31, 1),
        ],
        columns=["span_id", "parent_span_id", "service", "offset", "latency_ms"],
    )
    spans["timestamp"] = t0 + pd.to_timedelta(spans.pop("offset"), unit="ms")
    spans["endpoint"] = "/"
    spans["status_code"] = 200
    spans["error_message"] = None
    rows = waterfall_rows(spans)
    assert list(rows.span_id[:5]) == ["root", "early-child", "grandchild", "late-child", "orphan"]
    assert list(rows.depth[:5]) == [0, 1, 2, 1, 0]
    assert set(rows.span_id) == set(spans.span_id)  # the cycle is still drawn
    assert rows.set_index("span_id").start_ms["late-child"] == pytest.approx(50.0)
    assert waterfall_rows(spans.iloc[0:0]).empty


def test_lag_levels_and_durations():
    now = utcnow()
    assert pipeline_lag(None, now) is None and lag_level(None) == "unknown"
    assert lag_level(pipeline_lag(now - timedelta(seconds=30), now)) == "ok"
    assert lag_level(pipeline_lag(now - timedelta(minutes=5), now)) == "warning"
    assert lag_level(pipeline_lag(now - timedelta(hours=1), now)) == "error"
    assert format_duration(timedelta(seconds=45)) == "45 s"
    assert format_duration(timedelta(minutes=3, seconds=4)) == "3 min 4 s"
    assert format_duration(timedelta(days=3, hours=2)) == "3 d 2 h"


def _incident(store, id_, started, ended, status):
    store.execute(
        f"INSERT INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity, updated_at)"
        " VALUES (?, 'alpha', ?, ?, ?, 'high', ?)",
        [id_, started, ended, status, started],
    )


def _summary(store, id_, incident_id, created, text):
    store.execute(
        f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts)"
        " VALUES (?, ?, 'alpha', ?, ?, 'template', '{}')",
        [id_, incident_id, created, text],
    )


def test_incidents_carry_their_newest_summary_and_only_those_touching_the_range(store):
    now = utcnow().replace(microsecond=0)
    hour = timedelta(hours=1)
    _incident(store, "old-resolved", now - 30 * hour, now - 29 * hour, "resolved")  # before the 24 h range
    _incident(store, "old-open", now - 30 * hour, None, "open")  # open: always shown
    _incident(store, "ended-inside", now - 26 * hour, now - 2 * hour, "resolved")  # began before, ended inside
    _incident(store, "recent", now - hour, now - hour / 2, "resolved")
    # summaries written out of order: the newest by created_at wins, whatever the insert order
    _summary(store, "s2", "recent", now - hour / 4, "second")
    _summary(store, "s1", "recent", now - hour / 3, "first")
    _summary(store, "s3", "recent", now - hour / 5, "third")

    got = queries.incidents(store, RANGES["24h"], now).set_index("id")
    assert set(got.index) == {"old-open", "ended-inside", "recent"}
    assert list(got.index) == ["recent", "ended-inside", "old-open"]  # newest first
    assert got.loc["recent", "summary"] == "third"
    assert pd.isna(got.loc["ended-inside", "summary"])  # none written yet: NULL columns, not a missing row


def test_windows_without_percentiles_do_not_dilute_a_bucket(store):
    now = utcnow().replace(second=0, microsecond=0)
    # Both windows at the start of the last whole 30-minute bucket, so they share it whatever the clock says.
    earlier = now - timedelta(minutes=30)
    start = earlier.replace(minute=earlier.minute - earlier.minute % 30)
    for i, p95 in enumerate((None, 120.0)):  # a window with no latency figures, then a normal one
        store.execute(
            f"INSERT INTO {tables.SERVICE_METRICS} (window_start, window_end, service, request_count, error_count,"
            " client_error_count, error_rate, p50_latency_ms, p95_latency_ms, p99_latency_ms, updated_at)"
            " VALUES (?, ?, 'alpha', 100, 0, 0, 0.0, ?, ?, ?, ?)",
            [start + timedelta(minutes=i), start + timedelta(minutes=i + 1), p95, p95, p95, now],
        )
    got = queries.service_series(store, RANGES["7d"], now)  # one 30-minute bucket holds both
    assert len(got) == 1
    assert got.p95_latency_ms.iloc[0] == pytest.approx(120.0)
    assert got.request_rate.iloc[0] == pytest.approx(200 / 120)


def test_health_page_and_incident_detail_each_read_on_one_connection(store, settings, monkeypatch):
    """A page's queries share one read-only connection (opening the file costs more than
    each query), and give what each query gives alone."""
    seeded = seed_dashboard(store, settings.bronze_dir)
    now = utcnow()
    win = RANGES["6h"]
    opened = []
    connect = store._connect
    monkeypatch.setattr(store, "_connect", lambda read_only: opened.append(read_only) or connect(read_only))

    page = queries.health_page(store, win, now)
    assert opened == [True]
    pd.testing.assert_frame_equal(page.dead_letters, queries.dead_letter_by_reason(store, win, now))
    assert set(page.dead_letters["reason"]) == set(seeded.dead_letter_reasons)
    assert set(page.checks["component"]) == {"spark", "narrator"}

    inc = queries.incidents(store, win, now).set_index("id").loc[seeded.open_incident]
    opened.clear()
    services = sorted({inc.service, *inc.related_services, inc.root_cause_service})
    detail = queries.incident_detail(store, seeded.open_incident, inc.service, services, inc.started_at, None, now)
    assert opened == [True]
    assert len(detail.anomalies) == 8 and set(detail.trace_samples["trace_id"]) == set(seeded.trace_ids)
    # the error logs of its services in its span and of its sample traces (their ids come from the anomalies)
    assert dict(zip(detail.error_logs["body"], detail.error_logs["matched"], strict=True)) == seeded.error_logs


def test_overview_panels_align_services_on_one_time_axis_with_gaps_as_null():
    """uPlot draws aligned columns: a bucket a service has no window in must be a gap (null),
    not a shifted point; incidents are clipped to the range and open ones run to now."""
    now = pd.Timestamp("2026-03-02 06:00", tz="UTC").to_pydatetime()
    start = now - timedelta(hours=6)
    buckets = pd.date_range(end=now - timedelta(minutes=30), periods=4, freq="30min")
    latency = dict(p50_latency_ms=10.0, p95_latency_ms=20.0, p99_latency_ms=30.0)
    rows = [
        dict(bucket=b, service="b-svc", request_rate=float(i), error_rate=0.01, **latency)
        for i, b in enumerate(buckets)
    ]
    rows.append(dict(bucket=buckets[2], service="a-svc", request_rate=7.0, error_rate=np.nan, **latency))
    incidents = pd.DataFrame(
        [
            dict(service="b-svc", started_at=start - timedelta(hours=1), ended_at=start + timedelta(minutes=10)),
            dict(service="a-svc", started_at=now - timedelta(minutes=20), ended_at=None),
            dict(service="gone", started_at=start - timedelta(hours=3), ended_at=start - timedelta(hours=2)),
        ]
    )
    payload = charts.overview_panels(pd.DataFrame(rows), incidents, now, start)
    json.dumps(payload, allow_nan=False)  # what the browser parses: no NaN
    epoch = [int(b.timestamp()) for b in buckets]
    assert payload["x"] == epoch
    assert [s["name"] for s in payload["services"]] == ["a-svc", "b-svc"]
    assert payload["services"][0]["color"] == charts.service_colors(["a-svc", "b-svc"])["a-svc"]
    requests = next(p for p in payload["panels"] if p["id"] == "requests")
    assert requests["values"] == [[None, None, 7.0, None], [0.0, 1.0, 2.0, 3.0]]
    errors = next(p for p in payload["panels"] if p["id"] == "errors")
    assert errors["values"][0] == [None] * 4  # a NaN error rate is a gap too
    assert payload["x_range"] == [epoch[0], int(now.timestamp())]
    assert payload["incidents"] == [
        dict(x0=int(start.timestamp()), x1=int((start + timedelta(minutes=10)).timestamp()), label="incident: b-svc"),
        dict(x0=int((now - timedelta(minutes=20)).timestamp()), x1=int(now.timestamp()), label="incident: a-svc"),
    ]  # the one that ended before the range is not drawn
