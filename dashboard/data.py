"""Loaders the pages call: the queries, cached briefly, errors turned into messages.

Caching is per (database file, arguments) for `CACHE_TTL_SECONDS` (10 s, or
the refresh interval when shorter), so an auto-refresh sees fresh rows while
many open browser tabs share one query. A store that is locked for too long or
unreadable yields an empty frame plus a warning on the page, never a
traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd
import streamlit as st

from dashboard import queries
from dashboard.ranges import RANGES, Window, get_range, resolve
from observability.logs import get_logger
from observability.settings import get_settings
from observability.store import Store, StoreBusy, utcnow

# Never longer than the refresh interval, so each refresh can see new rows.
CACHE_TTL_SECONDS = max(1, min(10, get_settings().dashboard_refresh_seconds))
# A dashboard read waits at most this long for a writer's lock.
STORE_WAIT_SECONDS = 10.0
T = TypeVar("T")
log = get_logger(__name__)


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    """One Store per file per process: its lock serialises this process's reads."""
    return Store(path, max_wait_seconds=STORE_WAIT_SECONDS)


def _db() -> str:
    return str(get_settings().duckdb_path)


def _safe(what: str, fn: Callable[..., T], *args, default: Callable[[], T] = pd.DataFrame) -> T:
    try:
        return fn(*args)
    except (StoreBusy, duckdb.Error, OSError) as exc:
        log.warning("dashboard query failed", query=what, error=str(exc))
        st.warning(f"Could not read {what}: {exc}", icon=":material/warning:")
        return default()


def now() -> datetime:
    return utcnow()


# A page passes its Window (or, as before, a preset key such as "6h"); the cache
# is keyed by the range's expressions, resolved inside it, so a live range
# ("now-6h".."now") is shared by every open tab and moves with each refresh.
RangeArg = Window | str


def _exprs(r: RangeArg) -> tuple[str, str]:
    if isinstance(r, Window):
        return r.from_expr, r.to_expr
    tr = RANGES.get(r) or get_range(None)
    return tr.from_expr, tr.to_expr


def _window(from_expr: str, to_expr: str) -> Window:
    return resolve(from_expr, to_expr, utcnow())


# --- cached query wrappers (keyed by the database path and plain arguments) -----
@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _overview(db: str, from_expr: str, to_expr: str) -> queries.Overview:
    return queries.overview(_store(db), _window(from_expr, to_expr), utcnow())


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _incidents(db: str, from_expr: str, to_expr: str) -> pd.DataFrame:
    return queries.incidents(_store(db), _window(from_expr, to_expr), utcnow())


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _anomalies(db: str, from_expr: str, to_expr: str) -> pd.DataFrame:
    return queries.anomalies(_store(db), _window(from_expr, to_expr), utcnow())


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _incident_detail(
    db: str, incident_id: str, service: str, services: tuple[str, ...], started_at, ended_at
) -> queries.IncidentDetail:
    return queries.incident_detail(_store(db), incident_id, service, list(services), started_at, ended_at, utcnow())


@st.cache_data(ttl=60, show_spinner=False)
def _trace_spans(bronze_dir: str, trace_id: str, around, slack_seconds: float) -> pd.DataFrame:
    return queries.trace_spans(Path(bronze_dir), trace_id, around, timedelta(seconds=slack_seconds))


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _newest_data(db: str, what: str):
    return queries.newest_data(_store(db), what)


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _health_page(db: str, from_expr: str, to_expr: str) -> queries.HealthPage:
    return queries.health_page(_store(db), _window(from_expr, to_expr), utcnow())


# --- what the pages call --------------------------------------------------------
def _empty_overview() -> queries.Overview:
    return queries.Overview(*(pd.DataFrame() for _ in range(4)))


def overview(r: RangeArg) -> queries.Overview:
    return _safe("the overview", _overview, _db(), *_exprs(r), default=_empty_overview)


def incidents(r: RangeArg) -> pd.DataFrame:
    return _safe("incidents", _incidents, _db(), *_exprs(r))


def anomalies(r: RangeArg) -> pd.DataFrame:
    return _safe("anomalies", _anomalies, _db(), *_exprs(r))


def newest_data(what: str) -> datetime | None:
    """When the newest row behind a page is (`queries.NEWEST_DATA` keys), or None."""
    return _safe("the newest data", _newest_data, _db(), what, default=lambda: None)


def incident_detail(
    incident_id: str, service: str, services: list[str], started_at, ended_at
) -> queries.IncidentDetail:
    """The chosen incident's similar incidents, anomalies, trace samples and error logs (one read)."""
    return _safe(
        "the incident's details",
        _incident_detail,
        _db(),
        incident_id,
        service,
        tuple(sorted(set(services))),
        started_at,
        ended_at,
        default=lambda: queries.IncidentDetail(*(pd.DataFrame() for _ in range(4))),
    )


def trace_spans(trace_id: str, around, slack: timedelta) -> pd.DataFrame:
    bronze_dir = str(get_settings().bronze_dir)
    return _safe("bronze events", _trace_spans, bronze_dir, trace_id, around, slack.total_seconds())


def health_page(r: RangeArg) -> queries.HealthPage:
    """The health page's tables in one read (one connection, not seven)."""
    return _safe(
        "the health tables",
        _health_page,
        _db(),
        *_exprs(r),
        default=lambda: queries.HealthPage(*(pd.DataFrame() for _ in range(7))),
    )
