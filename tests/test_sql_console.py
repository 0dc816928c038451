"""The SQL console: what it refuses (and the bypasses), the locked-down connection, limits, saved queries, the page."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import sql_console
from dashboard.sql_guard import Refused, check
from observability import tables
from tests.seeding import seed_metrics

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"

REFUSED = {
    # writes and schema changes
    "insert": ("INSERT INTO anomalies (id) VALUES ('x')", "INSERT writes"),
    "update": ("UPDATE incidents SET status = 'resolved'", "UPDATE writes"),
    "delete": ("DELETE FROM service_metrics", "DELETE writes"),
    "create": ("CREATE TABLE t AS SELECT 1", "CREATE changes"),
    "create temp": ("CREATE TEMP TABLE t AS SELECT 1", "CREATE changes"),
    "drop": ("DROP TABLE service_metrics", "DROP changes"),
    "alter": ("ALTER TABLE incidents ADD COLUMN x INT", "ALTER changes"),
    # other databases, files, extensions, settings
    "attach": ("ATTACH '/tmp/other.duckdb' AS o", "ATTACH opens"),
    "detach": ("DETACH o", "DETACH"),
    "copy to": ("COPY service_metrics TO '/tmp/out.csv'", "COPY reads or writes files"),
    "copy from": ("COPY service_metrics FROM '/tmp/in.csv'", "COPY reads or writes files"),
    "export": ("EXPORT DATABASE '/tmp/dump'", "EXPORT writes files"),
    "install": ("INSTALL httpfs", "INSTALL and LOAD"),
    "load": ("LOAD httpfs", "INSTALL and LOAD"),
    "set": ("SET enable_external_access = true", "SET, RESET"),
    "reset": ("RESET threads", "SET, RESET"),
    "pragma": ("PRAGMA enable_profiling", "PRAGMA"),
    "call": ("CALL pragma_table_info('incidents')", "CALL"),
    "checkpoint": ("CHECKPOINT", "CALL and CHECKPOINT"),
    "vacuum": ("VACUUM", "VACUUM"),
    "begin": ("BEGIN TRANSACTION", "transactions"),
    "use": ("USE memory", "SET, RESET and USE"),
    "prepare": ("PREPARE q AS SELECT 1", "not read-only"),
    "set variable": ("SET VARIABLE x = 1", "SET, RESET and USE"),
    # file-reading functions and paths
    "read_csv": ("SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
    "read_csv_auto": ("SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto()"),
    "read_parquet": ("SELECT * FROM read_parquet('data/bronze/*.parquet')", "read_parquet()"),
    "parquet_scan": ("SELECT * FROM parquet_scan('x.parquet')", "parquet_scan()"),
    "read_json": ("SELECT * FROM read_json('x.json')", "read_json()"),
    "read_text": ("SELECT * FROM read_text('/etc/hostname')", "read_text()"),
    "read_blob": ("SELECT * FROM read_blob('/etc/hostname')", "read_blob()"),
    "glob": ("SELECT * FROM glob('/etc/*')", "glob()"),
    "parquet_metadata": ("SELECT * FROM parquet_metadata('x.parquet')", "parquet_metadata()"),
    "sniff_csv": ("SELECT * FROM sniff_csv('x.csv')", "sniff_csv()"),
    "query string": ("SELECT * FROM query('SELECT 1')", "query()"),
    "replacement scan": ("SELECT * FROM '/etc/passwd'", "looks like a file"),
    "quoted file table": ('SELECT * FROM "events.csv"', "looks like a file"),
    "url": ("FROM 'https://example.com/x.parquet'", "looks like a file"),
    # bypasses: comments, case, several statements, CTE wrapping, nesting
    "comment before write": ("/* just a select */ -- really\nDROP TABLE incidents", "DROP changes"),
    "mixed case": ("SeLeCt * FrOm ReAd_CsV('/etc/passwd')", "ReAd_CsV()"),
    "second statement": ("SELECT 1; DROP TABLE incidents", "One statement at a time"),
    "second after comment": ("SELECT 1 /* ; */; -- x\nCOPY incidents TO 'x.csv'", "One statement at a time"),
    "cte wrapping a write": ("WITH t AS (SELECT 1) DELETE FROM anomalies", "DELETE writes"),
    "cte reading a file": ("WITH t AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM t", "read_csv()"),
    "subquery in where": (
        "SELECT * FROM incidents WHERE id IN (SELECT column0 FROM read_csv('x.csv'))",
        "read_csv()",
    ),
    "scalar file read": ("SELECT (SELECT content FROM read_text('/etc/hostname')) AS c", "read_text()"),
    "schema-qualified": ("SELECT * FROM main.read_parquet('x.parquet')", "read_parquet()"),
    "lateral": ("SELECT * FROM incidents, LATERAL (SELECT * FROM glob(incidents.id))", "glob()"),
    "union branch": ("SELECT 1 UNION ALL SELECT * FROM read_json('x.json')", "read_json()"),
    "not sql": ("SELEC 1", "could not parse"),
    "empty": ("  -- only a comment\n", "Enter a SELECT"),
}

ALLOWED = [
    "SELECT * FROM service_metrics LIMIT 5",
    "  -- per service\nSELECT service, count(*) FROM service_metrics GROUP BY ALL;  ",
    "WITH recent AS (SELECT * FROM anomalies) SELECT count(*) FROM recent",
    "FROM incidents SELECT id",
    "DESCRIBE service_metrics",
    "SUMMARIZE service_metrics",
    "SHOW TABLES",
    "SELECT table_name FROM duckdb_tables()",
    "SELECT * FROM pragma_table_info('incidents')",
    "SELECT 'read_csv(x)' AS just_text, 'a.csv' AS name",  # names in strings are only strings
]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_with_a_clear_message(case):
    sql, reason = REFUSED[case]
    with pytest.raises(Refused) as err:
        check(sql)
    assert reason.lower() in str(err.value).lower(), str(err.value)


@pytest.mark.parametrize("sql", ALLOWED)
def test_read_only_queries_pass(sql):
    assert check(sql).sql.strip()


@pytest.fixture
def seeded_db(store, settings):
    seed_metrics(store, services=("checkout", "search"), minutes=30, seed=1)
    return settings.duckdb_path


ENGINE_REFUSES = [
    "SELECT * FROM read_csv('{tmp}/x.csv')",
    "SELECT * FROM '{tmp}/x.csv'",
    "SELECT * FROM glob('{tmp}/*')",
    "COPY service_metrics TO '{tmp}/out.csv'",
    "ATTACH '{tmp}/other.duckdb' AS o",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "INSERT INTO heartbeats VALUES ('x', now()::TIMESTAMP, '')",
    "DELETE FROM service_metrics",
]


def test_the_connection_refuses_even_what_the_checker_would_miss(seeded_db, tmp_path):
    """The second layer: each statement run on the console's connection without `check`."""
    (tmp_path / "x.csv").write_text("a\n1\n")
    with sql_console.connect(seeded_db) as con:
        for sql in ENGINE_REFUSES:
            with pytest.raises(duckdb.Error):
                con.execute(sql.format(tmp=tmp_path)).fetchall()
                pytest.fail(f"the connection ran: {sql}")
        assert con.execute("SELECT count(*) FROM service_metrics").fetchone()[0] == 60
        assert con.execute("SELECT current_setting('access_mode')").fetchone()[0] == "read_only"
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone()[0] is False
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_run_caps_rows_and_says_so(seeded_db):
    r = sql_console.run(seeded_db, "SELECT * FROM range(1000000000000)", timeout_seconds=10, max_rows=25)
    assert len(r.frame) == 25 and r.truncated
    r = sql_console.run(seeded_db, "SELECT * FROM service_metrics", timeout_seconds=10, max_rows=60)
    assert len(r.frame) == 60 and not r.truncated
    assert sql_console.to_csv(r.frame).decode().splitlines()[0].startswith("window_start,window_end,service")


def test_run_stops_a_query_at_the_timeout(seeded_db):
    with pytest.raises(sql_console.QueryTimeout, match="longer than 0.5 s"):
        sql_console.run(
            seeded_db,
            "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = -1",
            timeout_seconds=0.5,
            max_rows=10,
        )


def test_run_refuses_before_connecting(seeded_db, store):
    with pytest.raises(Refused):
        sql_console.run(seeded_db, "DELETE FROM service_metrics", timeout_seconds=5, max_rows=10)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.SERVICE_METRICS}")[0] == 60


def test_no_database_file_yet_reads_empty_tables(settings):
    assert not settings.duckdb_path.exists()
    r = sql_console.run(settings.duckdb_path, "SELECT * FROM incidents", timeout_seconds=5, max_rows=10)
    assert r.frame.empty and "root_cause_candidates" in r.frame.columns
    assert not settings.duckdb_path.exists()  # reading never creates the store


def test_saved_queries_round_trip(tmp_path):
    sql_console.save(tmp_path, "errors", "SELECT * FROM service_metrics WHERE error_rate > 0.1")
    sql_console.save(tmp_path, "incidents", "SELECT * FROM incidents")
    sql_console.save(tmp_path, "errors", "SELECT service FROM service_metrics")  # replaces
    assert sql_console.load_saved(tmp_path) == {
        "errors": "SELECT service FROM service_metrics",
        "incidents": "SELECT * FROM incidents",
    }
    with pytest.raises(Refused):
        sql_console.save(tmp_path, "bad", "DROP TABLE incidents")
    with pytest.raises(Refused):
        sql_console.save(tmp_path, "  ", "SELECT 1")
    sql_console.delete(tmp_path, "incidents")
    assert json.loads(sql_console.saved_path(tmp_path).read_text()) == {"errors": "SELECT service FROM service_metrics"}
    assert not list(sql_console.saved_path(tmp_path).parent.glob("*.tmp"))


def test_table_docs_cover_every_table_with_the_ddl_comments():
    docs = sql_console.table_docs()
    assert set(tables.ALL_TABLES) <= set(docs["table"])
    notes = dict(zip(zip(docs["table"], docs["column"], strict=True), docs["note"], strict=True))
    assert "5-minute bucket" in notes[(tables.FORECASTS, "target_time")]
    assert "error | slow | normal" in notes[(tables.TRACE_SAMPLES, "reason")]
    assert "best first" in notes[(tables.INCIDENTS, "root_cause_candidates")]  # from an ALTER TABLE
    assert sql_console.table_writers()[tables.SERVICE_METRICS] == "writer: spark"


@pytest.fixture
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def _sql_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("views/sql.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_runs_a_query_downloads_csv_saves_it_and_refuses_a_write(seeded_db, settings, _fresh_caches):
    at = _sql_page()
    assert at.title[0].value == "SQL"
    assert any(e.label.startswith("service_metrics") for e in at.expander)  # tables documented beside the editor

    at.text_area(key="sql_text").input("SELECT service, count(*) AS n FROM service_metrics GROUP BY service ORDER BY 1")
    at.button(key="sql_run").click().run()
    assert not at.exception and not at.error
    result = next(d.value for d in at.dataframe if list(d.value.columns) == ["service", "n"])
    assert list(result["service"]) == ["checkout", "search"] and list(result["n"]) == [30, 30]
    assert any("2 rows" in c.value for c in at.caption)
    assert at.get("download_button"), "CSV download missing"

    at.text_input(key="sql_save_name").input("per service")
    at.button(key="sql_save").click().run()
    assert sql_console.load_saved(settings.data_dir) == {
        "per service": "SELECT service, count(*) AS n FROM service_metrics GROUP BY service ORDER BY 1"
    }
    assert "per service" in at.selectbox(key="sql_saved_choice").options

    at.text_area(key="sql_text").input("DROP TABLE service_metrics")
    at.button(key="sql_run").click().run()
    assert any("Refused" in e.value and "DROP" in e.value for e in at.error)
    with duckdb.connect(str(seeded_db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM service_metrics").fetchone()[0] == 60


def test_page_loads_an_example_into_the_editor(seeded_db, _fresh_caches):
    at = _sql_page()
    at.selectbox(key="sql_saved_choice").set_value("Example: SLA risk (newest forecast)").run()
    assert at.text_area(key="sql_text").value == "SELECT * FROM sla_risk ORDER BY probability DESC"
    at.button(key="sql_run").click().run()
    assert not at.exception and not at.error
    assert any("0 rows" in c.value for c in at.caption)
