"""SQL: read-only queries against the DuckDB store, the tables documented beside the editor.

The checks and the locked-down connection are `dashboard.sql_guard` and
`dashboard.sql_console`; this page only renders.
"""

from __future__ import annotations

import duckdb
import streamlit as st

from dashboard import data, sql_console, ui
from dashboard.sql_guard import Refused
from observability.settings import get_settings

EXAMPLES = {
    "Example: request rate per service, last hour": (
        "SELECT service, sum(request_count) / 3600.0 AS req_per_s, avg(error_rate) AS error_rate,\n"
        "       max(p99_latency_ms) AS worst_p99_ms\n"
        "FROM service_metrics\n"
        "WHERE window_start >= now()::TIMESTAMP - INTERVAL 1 hour\n"
        "GROUP BY service ORDER BY req_per_s DESC"
    ),
    "Example: open incidents": (
        "SELECT service, started_at, peak_severity, root_cause_service, related_services\n"
        "FROM incidents WHERE status = 'open' ORDER BY started_at DESC"
    ),
    "Example: SLA risk (newest forecast)": "SELECT * FROM sla_risk ORDER BY probability DESC",
    "Example: the current p99 forecast": (
        "SELECT service, target_time, predicted, lower, upper\n"
        "FROM forecasts\n"
        "WHERE metric = 'p99_latency_ms' AND made_at = (SELECT max(made_at) FROM forecasts)\n"
        "ORDER BY service, target_time"
    ),
}
SQL_KEY = "sql_text"
RESULT_KEY = "sql_result"


@st.cache_data(show_spinner=False)
def _docs():
    return sql_console.table_docs(), sql_console.table_writers()


def _load_choice() -> None:
    name = st.session_state.get("sql_saved_choice")
    queries = {**EXAMPLES, **_saved()}
    if name in queries:
        st.session_state[SQL_KEY] = queries[name]


def _saved() -> dict[str, str]:
    try:
        return sql_console.load_saved(get_settings().data_dir)
    except (OSError, ValueError) as exc:
        st.warning(f"Could not read the saved queries: {exc}", icon=":material/warning:")
        return {}


def _run(sql: str) -> None:
    s = get_settings()
    db = data._db()
    try:
        result = sql_console.run(
            s.duckdb_path,
            sql,
            timeout_seconds=s.sql_console_timeout_seconds,
            max_rows=s.sql_console_max_rows,
            lock=data._store(db)._local_lock,
        )
    except Refused as exc:
        st.session_state[RESULT_KEY] = ("refused", str(exc))
    except sql_console.QueryTimeout as exc:
        st.session_state[RESULT_KEY] = ("error", str(exc))
    except duckdb.Error as exc:
        st.session_state[RESULT_KEY] = ("error", f"DuckDB: {exc}")
    else:
        st.session_state[RESULT_KEY] = ("ok", result)


def _render_result() -> None:
    outcome = st.session_state.get(RESULT_KEY)
    if outcome is None:
        return
    kind, value = outcome
    if kind == "refused":
        st.error(f"Refused: {value}", icon=":material/block:")
        return
    if kind == "error":
        st.error(value, icon=":material/error:")
        return
    s = get_settings()
    frame = value.frame
    more = f" (first {s.sql_console_max_rows:,} shown: SQL_CONSOLE_MAX_ROWS)" if value.truncated else ""
    st.caption(f"{len(frame):,} rows{more} in {value.seconds:.2f} s.")
    st.dataframe(frame, hide_index=True, key="sql_result_table")
    st.download_button(
        "Download CSV", sql_console.to_csv(frame), file_name="query.csv", mime="text/csv", key="sql_download"
    )


def _render_saved_controls(sql: str) -> None:
    saved = _saved()
    with st.expander("Save or delete a query"):
        name = st.text_input("Name", key="sql_save_name")
        left, right = st.columns(2)
        if left.button("Save", key="sql_save"):
            try:
                sql_console.save(get_settings().data_dir, name, sql)
                st.toast(f"Saved {name!r}")
                st.rerun()
            except Refused as exc:
                st.error(f"Not saved: {exc}", icon=":material/block:")
            except OSError as exc:
                st.error(f"Not saved: {exc}", icon=":material/error:")
        if saved:
            victim = right.selectbox("Saved query", sorted(saved), key="sql_delete_choice")
            if right.button("Delete", key="sql_delete"):
                sql_console.delete(get_settings().data_dir, victim)
                st.rerun()


def _render_docs() -> None:
    docs, writers = _docs()
    st.markdown("**Tables**")
    st.caption("As defined in `observability/tables.py` (one writer each; the console only reads).")
    for table, cols in docs.groupby("table", sort=True):
        with st.expander(f"{table} · {writers.get(table, '')}"):
            st.dataframe(cols[["column", "type", "note"]], hide_index=True, key=f"sql_doc_{table}")


st.title("SQL")
settings = get_settings()
st.caption(
    f"Read-only SQL against the DuckDB store: one SELECT at a time (WITH, DESCRIBE, SHOW, SUMMARIZE too), "
    f"stopped after {settings.sql_console_timeout_seconds:g} s, at most {settings.sql_console_max_rows:,} rows. "
    "Writes, ATTACH, COPY, INSTALL/LOAD, SET/PRAGMA and file-reading functions are refused."
)
editor, docs_col = st.columns([3, 2])
with editor:
    choices = [*EXAMPLES, *sorted(_saved())]
    st.selectbox(
        "Saved queries and examples",
        choices,
        index=None,
        placeholder="Load a saved query or an example",
        key="sql_saved_choice",
        on_change=_load_choice,
    )
    sql = st.text_area("SQL", key=SQL_KEY, height=180, placeholder="SELECT * FROM service_metrics LIMIT 10")
    if st.button("Run", type="primary", key="sql_run"):
        _run(sql)
    _render_saved_controls(sql)
    _render_result()
with docs_col, st.container(height=720, border=False):
    _render_docs()
ui.updated_caption(data.now())
