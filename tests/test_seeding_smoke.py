from datetime import timedelta

from observability import tables
from observability.store import utcnow
from tests.seeding import seed_incident, seed_metrics


def test_seeded_store_has_metrics_and_an_incident(store):
    df = seed_metrics(store, minutes=30)
    assert store.table_counts()[tables.SERVICE_METRICS] == len(df) == 30 * 5
    iid = seed_incident(store, "payments", utcnow() - timedelta(minutes=10), related=["checkout"])
    row = store.fetch_one("SELECT service, related_services FROM incidents WHERE id = ?", [iid])
    assert row == ("payments", ["checkout"])
    assert store.fetch_one("SELECT count(*) FROM anomalies WHERE service='payments'")[0] == 5
