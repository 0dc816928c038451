"""Small rendering helpers shared by the pages."""

from __future__ import annotations

import math

import streamlit as st

from dashboard.ranges import DEFAULT_RANGE, RANGES, TimeRange, get_range
from observability.settings import get_settings

RANGE_KEY = "range"


def range_selector() -> TimeRange:
    """The time range picker (sidebar); bound to `?range=` so views can be linked."""
    keys = list(RANGES)
    key = st.sidebar.selectbox(
        "Time range",
        keys,
        index=keys.index(DEFAULT_RANGE),
        key=RANGE_KEY,
        # the option itself is the URL value (?range=7d), so no format_func
        help="; ".join(f"{k}: {r.label.lower()}, {r.bucket_minutes}-minute points" for k, r in RANGES.items()),
        bind="query-params",
    )
    return get_range(key)


def current_range() -> TimeRange:
    return get_range(st.session_state.get(RANGE_KEY))


def refresh_seconds() -> int:
    return int(get_settings().dashboard_refresh_seconds)


def updated_caption(now) -> None:
    st.caption(f"Updated {now:%Y-%m-%d %H:%M:%S} UTC · refreshes every {refresh_seconds()} s")


def empty_state(message: str) -> None:
    st.info(message, icon=":material/hourglass_empty:")


def fmt_rate(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.1f} req/s"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2%}"


def fmt_ms(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.0f} ms"


_MD_SPECIAL = "\\`*_{}[]<>()#+-.!|:$~"


def md_escape(text: str) -> str:
    """Escape a data value (a service name, say) for st.markdown."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text))
