"""Search: find traces, log templates and incidents by meaning ("payments timing out" finds
"upstream payments returned 503"), filtered by kind, service, time range and a similarity
threshold, each result linking to its trace or incident. The query is bound to `?q=`."""

from __future__ import annotations

import streamlit as st

from dashboard import search_box, ui
from dashboard.ranges import RANGES
from observability import semantic_search
from observability.settings import get_settings
from observability.store import utcnow

ANY_TIME = "any time"

st.title("Search")
st.caption(
    "Search by meaning, not by words: the query and every indexed trace, log template and incident are "
    "embedded by a local model (all-MiniLM-L6-v2, offline) and ranked by cosine similarity."
)
query = st.text_input(
    "What are you looking for?", key="q", placeholder="e.g. card declined at checkout", bind="query-params"
)
kind_col, service_col, time_col, sim_col, limit_col = st.columns([1, 1, 1, 2, 1])
with kind_col:
    kinds = list(search_box.KIND_LABELS)
    kind = st.selectbox("Kind", kinds, format_func=search_box.KIND_LABELS.get, key="search_kind")
with service_col:
    service = st.selectbox("Service", ["all", *search_box.services()], key="search_service")
with time_col:
    times = [ANY_TIME, *RANGES]
    when = st.selectbox("Time", times, format_func=lambda k: k if k == ANY_TIME else RANGES[k].label, key="search_time")
with sim_col:
    threshold = st.slider(
        "Similarity at least", -1.0, 1.0, float(get_settings().search_min_similarity), 0.05, key="search_threshold"
    )
with limit_col:
    limit = st.number_input("Results", 1, semantic_search.MAX_LIMIT, 20, key="search_limit")

start = None if when == ANY_TIME else RANGES[when].start(utcnow())
filters = semantic_search.Filters(
    kind=None if kind == "all" else kind,
    service=None if service == "all" else service,
    start=start,
    min_similarity=threshold,
    limit=int(limit),
)
if not query.strip():
    ui.empty_state("Type a question in your own words, e.g. 'payments timing out' or 'checkout is slow'.")
else:
    search_box.render_results(query, filters, key="search")
