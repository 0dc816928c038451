"""The search box: search by meaning over traces, log templates and incidents, shown as a table.

Reusable: the Search page adds its filters around `render_results`; other pages (Incidents)
drop in `search_box(...)`. The embedding model loads once per dashboard process
(st.cache_resource, ~5 s, sha256-checked, offline) and only when a query is typed. A bad query
(empty is simply no search; too long, control characters) shows the reason, never a traceback.
Each result links to what it is: a trace to the Traces page, a log template to its newest
trace, an incident to the Incidents page.
"""

from __future__ import annotations

from urllib.parse import quote

import duckdb
import pandas as pd
import streamlit as st

from observability import embedding_model, semantic_search, tables
from observability.logs import get_logger
from observability.settings import get_settings
from observability.store import Store, StoreBusy

log = get_logger(__name__)
STORE_WAIT_SECONDS = 10.0
KIND_LABELS = {"all": "everything", "trace": "traces", "log": "log templates", "incident": "incidents"}


@st.cache_resource(show_spinner="Loading the search model (once)…")
def _embedder():
    return embedding_model.load(threads=1)


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return Store(path, max_wait_seconds=STORE_WAIT_SECONDS)


def store() -> Store:
    return _store(str(get_settings().duckdb_path))


def link(row) -> str | None:
    """Where a result opens: the trace (a trace, a log's newest trace) or the incident."""
    if row["kind"] == "incident":
        return f"incidents?incident_id={quote(str(row['id']))}"
    trace = row.get("trace_id")
    if isinstance(trace, str) and trace:
        return f"traces?trace_id={quote(trace)}"
    return None


@st.cache_data(ttl=10, show_spinner=False)
def _search(db: str, query: str, filters: semantic_search.Filters) -> pd.DataFrame:
    embedder = _embedder()
    vector = embedder.encode([query])[0]
    probes = get_settings().search_index_probes or None
    # the IVF index the indexer persisted, when there is one (nothing is built here)
    return _store(db).read(lambda con: semantic_search.search(con, vector, filters, model=embedder.name, probes=probes))


def run_search(query: str, filters: semantic_search.Filters) -> pd.DataFrame | None:
    """Results, or None after showing why there are none (bad query, model or store trouble)."""
    try:
        q = semantic_search.check_query(query)
    except semantic_search.BadQuery as exc:
        st.warning(f"Cannot search: {exc}", icon=":material/search_off:")
        return None
    try:
        return _search(str(get_settings().duckdb_path), q, filters)
    except embedding_model.EmbeddingModelError as exc:
        st.error(f"The search model is unavailable: {exc}", icon=":material/error:")
    except (StoreBusy, duckdb.Error, OSError) as exc:
        log.warning("search failed", error=str(exc))
        st.warning(f"Could not search: {exc}", icon=":material/warning:")
    return None


def render_results(query: str, filters: semantic_search.Filters, key: str) -> pd.DataFrame | None:
    """Search and show the results (similarity, kind, service, time, text, link)."""
    if not query.strip():
        return None
    df = run_search(query, filters)
    if df is None:
        return None
    if df.empty:
        st.info(
            f"Nothing at or above similarity {filters.min_similarity:.2f} for this query "
            "(lower the threshold, widen the filters, or check that `python -m llm.indexer` runs).",
            icon=":material/hourglass_empty:",
        )
        return df
    shown = df.assign(open=[link(r) for r in df.to_dict("records")])
    st.dataframe(
        shown[["similarity", "kind", "service", "time", "text", "open"]],
        hide_index=True,
        column_config={
            "similarity": st.column_config.ProgressColumn("similarity", min_value=0.0, max_value=1.0, format="%.2f"),
            "time": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "text": st.column_config.TextColumn("what matched", width="large"),
            "open": st.column_config.LinkColumn("open", display_text="open"),
        },
        key=f"table_{key}",
    )
    st.caption(
        f"{len(df)} results, best first, by cosine similarity of all-MiniLM-L6-v2 embeddings; {how_searched(df)}."
    )
    return df


def how_searched(df: pd.DataFrame) -> str:
    """`index=ivf (probed 4 of 120 lists)` or `index=exact (every vector scored)`."""
    if df.attrs.get("index") == semantic_search.IVF:
        return f"index=ivf (probed {df.attrs.get('probed')} of {df.attrs.get('lists')} lists)"
    return "index=exact (every vector scored)"


def search_box(key: str, *, kind: str | None = None, label: str = "Search by meaning", limit: int = 10) -> None:
    """A text box and its results; `kind` preselects what to search (the user can widen it)."""
    left, right = st.columns([4, 1])
    with left:
        query = st.text_input(label, key=f"{key}_query", placeholder="e.g. payments timing out")
    with right:
        kinds = list(KIND_LABELS)
        chosen = st.selectbox(
            "in", kinds, index=kinds.index(kind or "all"), format_func=KIND_LABELS.get, key=f"{key}_kind"
        )
    filters = semantic_search.Filters(
        kind=None if chosen == "all" else chosen, min_similarity=get_settings().search_min_similarity, limit=limit
    )
    render_results(query, filters, key)


def services() -> list[str]:
    """Services that have searchable items (for the filter)."""
    try:
        rows = store().fetch_all(
            f"SELECT DISTINCT service FROM {tables.EMBEDDINGS} WHERE service IS NOT NULL ORDER BY service"
        )
    except (StoreBusy, duckdb.Error, OSError):
        return []
    return [r[0] for r in rows]
