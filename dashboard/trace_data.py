"""Cached loaders of the traces page and the service map (`dashboard.data`'s pattern).

`time_span()` is the one place these pages turn the dashboard's time range into
(start, end): `ui.current_window()`, the sidebar's from/to, which a link's
`?from=`/`?to=` (an incident's or an anomaly's time) sets.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from dashboard import data, trace_queries, ui
from dashboard.trace_queries import TraceSearch
from observability.settings import get_settings


def time_span() -> tuple[datetime, datetime, str]:
    """(start, end, label) of what these pages show: the dashboard's range
    (`ui.current_window`: the sidebar's from/to, which a link's `?from=`/`?to=` sets)."""
    win = ui.current_window()
    if win.preset:
        return win.start, win.end, win.label.lower()
    return win.start, win.end, f"{win.start:%Y-%m-%d %H:%M} – {win.end:%Y-%m-%d %H:%M} UTC"


def traces_params(service: str | None = None, start=None, end=None) -> dict[str, str]:
    """The traces page's URL parameters for a service and time span (the other pages' links)."""
    params: dict[str, str] = {}
    if service:
        params["service"] = service
    if start is not None and end is not None and not pd.isna(start) and not pd.isna(end):
        params["from"] = pd.Timestamp(start).strftime("%Y-%m-%dT%H:%M:%SZ")
        params["to"] = pd.Timestamp(end).strftime("%Y-%m-%dT%H:%M:%SZ")
    return params


def traces_url(service: str | None = None, start=None, end=None) -> str:
    params = traces_params(service, start, end)
    return "traces" + (f"?{urlencode(params)}" if params else "")


TRACES_PAGE = "views/traces.py"


def traces_link(label: str, service: str | None = None, start=None, end=None) -> None:
    """An in-app link to the traces page for a service and time span."""
    st.page_link(TRACES_PAGE, label=label, icon=":material/timeline:", query_params=traces_params(service, start, end))


def trace_link(trace_id: str, label: str = "Open in Traces (critical path, findings)") -> None:
    """An in-app link to one trace on the traces page."""
    st.page_link(TRACES_PAGE, label=label, icon=":material/timeline:", query_params={"trace_id": trace_id})


def _bronze() -> str:
    return str(get_settings().bronze_dir)


@st.cache_data(ttl=data.CACHE_TTL_SECONDS, show_spinner=False)
def _search(db: str, bronze_dir: str, search: TraceSearch, start, end) -> pd.DataFrame:
    return trace_queries.search_traces(data._store(db), Path(bronze_dir), search, start, end)


@st.cache_data(ttl=data.CACHE_TTL_SECONDS, show_spinner=False)
def _services(db: str, start, end) -> list[str]:
    return trace_queries.trace_services(data._store(db), start, end)


@st.cache_data(ttl=data.CACHE_TTL_SECONDS, show_spinner=False)
def _trace(db: str, trace_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    # the index row and the logs of one trace on one connection: opening the file costs more than both
    return data._store(db).read(
        lambda con: (trace_queries.trace_row(con, trace_id), trace_queries.trace_logs(con, trace_id))
    )


@st.cache_data(ttl=60, show_spinner=False)
def _trace_spans(bronze_dir: str, trace_id: str, start, end) -> pd.DataFrame:
    return trace_queries.trace_spans(Path(bronze_dir), trace_id, start, end)


@st.cache_data(ttl=data.CACHE_TTL_SECONDS, show_spinner=False)
def _service_map(db: str, start, end) -> tuple[pd.DataFrame, trace_queries.ServiceHealth]:
    # one connection for both: opening the file costs more than either query
    return data._store(db).read(
        lambda con: (trace_queries.service_edges(con, start, end), trace_queries.service_health(con, start, end))
    )


def search(search: TraceSearch, start, end) -> pd.DataFrame:
    return data._safe("the trace index", _search, data._db(), _bronze(), search, start, end)


def services(start, end) -> list[str]:
    return data._safe("trace services", _services, data._db(), start, end, default=list)


def _empty_trace() -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(), pd.DataFrame()


def trace_row(trace_id: str) -> pd.DataFrame:
    return data._safe("the trace index", _trace, data._db(), trace_id, default=_empty_trace)[0]


def trace_spans(trace_id: str, start, end) -> pd.DataFrame:
    return data._safe("bronze spans", _trace_spans, _bronze(), trace_id, start, end)


def trace_logs(trace_id: str) -> pd.DataFrame:
    """The trace's logs (read with its index row: the same cached read)."""
    return data._safe("the trace's logs", _trace, data._db(), trace_id, default=_empty_trace)[1]


def service_map(start, end) -> tuple[pd.DataFrame, trace_queries.ServiceHealth]:
    """(call edges, service health) of the span, in one read."""
    return data._safe(
        "service dependencies",
        _service_map,
        data._db(),
        start,
        end,
        default=lambda: (pd.DataFrame(), trace_queries.ServiceHealth(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())),
    )
