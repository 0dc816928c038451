"""End to end with real clients: an app instrumented with the official OpenTelemetry SDK -> the OTLP
receiver (`python -m ingest`) -> the local log -> the Spark job -> DuckDB, checked against what the app did.

The `receiver` fixture comes from tests/otlp_fixtures.py (a plugin of tests/conftest.py).
"""

from __future__ import annotations

import pytest

from tests.otlp_fixtures import run_shop
from tests.spark_fixtures import job_env, run_job

ORDERS, ERROR_EVERY = 12, 4


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_app_through_receiver_and_spark(protocol, receiver, data_dir, settings, store):
    endpoint = receiver.http_url if protocol == "http" else receiver.grpc_target
    truth, services = run_shop(protocol, endpoint, ORDERS, ERROR_EVERY)
    try:
        run_job(job_env(data_dir), "--available-now")
    finally:
        for svc in services:
            svc.shutdown()
    n_err = len(truth.errors)
    assert n_err == ORDERS // ERROR_EVERY

    # requests are entry spans: the frontend's CLIENT call and the backend's CLIENT query are not
    per_service = dict(
        (
            (s, (r, e))
            for s, r, e in store.fetch_all(
                "SELECT service, sum(request_count), sum(error_count) FROM service_metrics GROUP BY service"
            )
        )
    )
    assert per_service == {"frontend": (ORDERS, n_err), "backend": (ORDERS, n_err)}
    endpoints = store.fetch_all(
        "SELECT service, endpoint, sum(request_count), sum(error_count) FROM endpoint_metrics GROUP BY ALL ORDER BY ALL"
    )
    assert endpoints == [
        ("backend", "POST /api/charge", ORDERS, n_err),
        ("frontend", "GET /api/orders/{id}", ORDERS, n_err),
    ]

    # edges: frontend -> backend across the propagated context; backend -> its database (db.system)
    edges = store.fetch_all(
        "SELECT parent_service, child_service, sum(call_count), sum(error_count) "
        "FROM service_dependencies GROUP BY ALL ORDER BY ALL"
    )
    assert edges == [("backend", "postgresql", ORDERS, 0), ("frontend", "backend", ORDERS, n_err)]

    # every span in bronze with its kind
    from datetime import timedelta

    from observability.bronze import read_events
    from observability.store import utcnow

    now = utcnow()
    bronze = read_events(settings.bronze_dir, now - timedelta(hours=1), now + timedelta(minutes=5))
    assert len(bronze) == 4 * ORDERS
    assert bronze.groupby(["service", "kind"]).size().to_dict() == {
        ("backend", "client"): ORDERS,
        ("backend", "server"): ORDERS,
        ("frontend", "client"): ORDERS,
        ("frontend", "server"): ORDERS,
    }

    # logs with their trace context, in the backend's server span
    logs = store.fetch_df("SELECT * FROM logs")
    assert len(logs) == ORDERS
    for o in range(ORDERS):
        failed = o in truth.errors
        row = logs[logs.body == (f"charge failed for order {o}" if failed else f"charged order {o}")]
        assert len(row) == 1, o
        row = row.iloc[0]
        assert (row.service, row.severity_text, row.severity_number) == (
            "backend",
            "ERROR" if failed else "INFO",
            17 if failed else 9,
        )
        assert (row.trace_id, row.span_id) == (truth.trace_of_order[o], truth.backend_span_of_order[o])

    # metric points: the counters and the histogram
    points = store.fetch_df("SELECT * FROM otel_metrics")
    assert len(points) == 5
    counters = points[points.name == "shop.orders"]
    import json

    got = {(r.service, json.loads(r.attributes)["outcome"]): r.value for r in counters.itertuples()}
    assert got == {
        ("frontend", "ok"): ORDERS - n_err,
        ("frontend", "error"): n_err,
        ("backend", "ok"): ORDERS - n_err,
        ("backend", "error"): n_err,
    }
    (hist,) = points[points.name == "shop.charge.amount"].itertuples()
    assert (hist.kind, hist.service, hist.unit, hist.count) == ("histogram", "backend", "EUR", len(truth.amounts))
    assert hist.sum == pytest.approx(sum(truth.amounts)) and sum(hist.bucket_counts) == hist.count
    assert store.fetch_one("SELECT count(*) FROM dead_letter")[0] == 0
