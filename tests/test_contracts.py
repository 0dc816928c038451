"""One source per cross-stage contract: the event's columns, heartbeat names, "awaiting a summary"."""

from __future__ import annotations

import json
from datetime import timedelta

import duckdb
import pyarrow as pa

from observability import columns, health, summaries, tables
from observability.schema import EVENT_COLUMNS, EVENT_FIELDS
from observability.store import utcnow


def test_every_event_form_is_derived_from_the_one_definition(tmp_path):
    from anomaly_detection.evaluation import aggregate_duckdb
    from spark.partials import PARTIAL_ARROW_SCHEMA, PARTIAL_SCHEMA
    from spark.source import AGGREGATION_FIELDS, EVENT_SCHEMA
    from spark.staging import BRONZE_SCHEMA

    assert tuple(BRONZE_SCHEMA.names) == EVENT_FIELDS
    by_name = {c.name: c for c in EVENT_COLUMNS}
    for name in EVENT_FIELDS:
        assert BRONZE_SCHEMA.field(name).type == columns.arrow_type(by_name[name])
    assert BRONZE_SCHEMA.field("timestamp").type == pa.timestamp("ms")
    assert EVENT_SCHEMA.split(", ") == [f"{n} {columns.TYPES[by_name[n].type][0]}" for n in AGGREGATION_FIELDS]
    # what the source hands Spark: partial window aggregates, one schema in two spellings
    assert [c.split(" ")[0] for c in PARTIAL_SCHEMA.split(", ")] == PARTIAL_ARROW_SCHEMA.names
    assert PARTIAL_ARROW_SCHEMA.field("timestamp").type == pa.timestamp("us", tz="UTC")
    for name in ("service", "endpoint"):
        assert PARTIAL_ARROW_SCHEMA.field(name).type == columns.arrow_type(by_name[name])
    # the DuckDB read_json map reads a wire line with each field's type
    path = tmp_path / "events.jsonl"
    path.write_text(
        json.dumps(
            {
                "timestamp": "2024-01-01T00:00:00Z",
                "service": "a",
                "status_code": 200,
                "latency_ms": 1.5,
                "trace_id": None,
            }
        )
        + "\n"
    )
    mapping = columns.duckdb_json_columns(columns.select(EVENT_COLUMNS, aggregate_duckdb._FIELDS))
    got = {
        r[0]: r[1]
        for r in duckdb.connect()
        .execute(f"DESCRIBE SELECT * FROM read_json('{path}', format='newline_delimited', columns={mapping})")
        .fetchall()
    }
    assert list(got) == list(aggregate_duckdb._FIELDS)
    assert got["status_code"] == "INTEGER" and got["latency_ms"] == "DOUBLE" and got["timestamp"] == "VARCHAR"


def test_sql_with_default_reads_older_files_without_the_column(tmp_path):
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS a) TO '{tmp_path}/old.parquet'")
    con.execute(f"COPY (SELECT 2 AS a, 'client' AS k) TO '{tmp_path}/new.parquet'")
    k = columns.Column("k", "string", default="server")
    only_old = [d[0] for d in con.execute(f"SELECT * FROM '{tmp_path}/old.parquet'").description]
    assert con.execute(f"SELECT {columns.sql_with_default(k, only_old)} FROM '{tmp_path}/old.parquet'").fetchall() == [
        ("server",)
    ]
    src = f"read_parquet('{tmp_path}/*.parquet', union_by_name=true)"
    both = [d[0] for d in con.execute(f"SELECT * FROM {src}").description]
    rows = con.execute(f"SELECT a, {columns.sql_with_default(k, both)} FROM {src} ORDER BY a").fetchall()
    assert rows == [(1, "server"), (2, "client")]


def test_heartbeat_names_are_the_ones_health_reads(store):
    assert (health.SPARK_HEARTBEAT, health.DETECTOR_HEARTBEAT, health.NARRATOR_HEARTBEAT) == (
        tables.SPARK_HEARTBEAT,
        tables.DETECTOR_HEARTBEAT,
        tables.NARRATOR_HEARTBEAT,
    )
    from llm.summary_writer import CycleResult, Narrator

    narrator = Narrator.__new__(Narrator)
    narrator.store = store
    narrator.heartbeat(CycleResult())
    assert store.fetch_all(f"SELECT component FROM {tables.HEARTBEATS}") == [(tables.NARRATOR_HEARTBEAT,)]


def test_health_and_the_narrator_agree_on_what_awaits_a_summary(store):
    """A change that lands while a summary is being written leaves the incident pending for both."""
    from llm.summary_writer import pending_incidents
    from tests.seeding import seed_incident

    now = utcnow()
    incident = seed_incident(store, "checkout", now - timedelta(hours=1))
    changed_at = now - timedelta(seconds=30)
    store.execute(f"UPDATE {tables.INCIDENTS} SET updated_at = ? WHERE id = ?", [changed_at, incident])
    # the summary was built from the facts as of 40 s ago and stored 10 s after the change
    facts = {"incident_id": incident, "incident_updated_at": str(now - timedelta(seconds=40))}
    store.execute(
        f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
        "VALUES ('s1', ?, 'checkout', ?, 's', 'template', ?)",
        [incident, now - timedelta(seconds=20), json.dumps(facts)],
    )
    assert pending_incidents(store) == [incident]
    assert health.narration_backlog(store) == (1, changed_at)
    assert summaries.awaiting_summary(store) == [incident]
    # a summary built from the changed facts covers it, for both
    facts["incident_updated_at"] = str(changed_at)
    store.execute(
        f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
        "VALUES ('s2', ?, 'checkout', ?, 's', 'template', ?)",
        [incident, now, json.dumps(facts)],
    )
    assert pending_incidents(store) == [] and health.narration_backlog(store) == (0, None)


def test_bronze_files_written_before_kind_read_as_server_spans(tmp_path):
    """Partitions staged before the `kind` column existed stay readable beside new ones."""
    from datetime import datetime

    import pandas as pd

    from observability import bronze

    t = datetime(2024, 5, 1, 12, 0)
    old = pd.DataFrame(
        [
            {
                "event_id": "a1",
                "timestamp": t,
                "service": "api",
                "endpoint": "/x",
                "status_code": 200,
                "latency_ms": 1.0,
                "trace_id": None,
                "span_id": None,
                "parent_span_id": None,
                "error_message": None,
                "attributes": None,
            }
        ]
    )
    part = tmp_path / "date=2024-05-01" / "hour=12"
    part.mkdir(parents=True)
    old.to_parquet(part / "part-old.parquet", index=False)
    window = (t - timedelta(minutes=1), t + timedelta(minutes=1))
    got = bronze.read_events(tmp_path, *window)
    assert list(got.columns) == list(EVENT_FIELDS) and got.kind.tolist() == ["server"]
    bronze.write_events(tmp_path, old.assign(event_id="b2", kind="client"))
    got = bronze.read_events(tmp_path, *window)
    assert dict(zip(got.event_id, got.kind, strict=True)) == {"a1": "server", "b2": "client"}
