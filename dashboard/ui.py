"""Small rendering helpers shared by the pages, and the time range every page reads."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import streamlit as st

from dashboard import ranges
from dashboard.ranges import DEFAULT_FROM, DEFAULT_TO, RANGES, RangeError, TimeRange, Window, get_range
from observability.settings import get_settings
from observability.store import utcnow

RANGE_KEY = "range"  # the quick-range selectbox (and the legacy ?range=7d)
FROM_KEY = "from"  # the URL parameters, Grafana's names
TO_KEY = "to"
CUSTOM = "custom"
_PICK_START, _PICK_END, _PICKED_FOR = "range_pick_start", "range_pick_end", "_range_picked_for"
_PENDING = "_range_pending"  # a range asked for from inside a live fragment, applied on the next full run
_URL_SEEN = "_range_url_seen"  # the URL's from/to at the end of the last run


def _set_range(from_expr: str, to_expr: str) -> None:
    """Callbacks only: they run before the bound widgets are drawn."""
    st.session_state[FROM_KEY] = from_expr
    st.session_state[TO_KEY] = to_expr
    if RANGE_KEY in st.query_params:
        del st.query_params[RANGE_KEY]  # a legacy ?range= must not fight from/to


def _on_preset() -> None:
    key = st.session_state.get(RANGE_KEY)
    if key in RANGES:
        _set_range(RANGES[key].from_expr, RANGES[key].to_expr)


def _on_pick() -> None:
    start, end = st.session_state.get(_PICK_START), st.session_state.get(_PICK_END)
    if start is not None and end is not None:
        _set_range(ranges.iso(start), ranges.iso(end))


def _initial_exprs() -> None:
    """First run of a session: the URL's from/to, else a legacy ?range=7d, else the default.
    A pending jump (see `empty_range`) is applied here, before the fields are drawn."""
    url = _url_exprs()
    if _URL_SEEN in st.session_state and url != st.session_state[_URL_SEEN]:
        # the URL changed since the last run, not through the fields: a link to another
        # page with its own ?from=&to= (an incident's time); it wins
        for key, value in zip((FROM_KEY, TO_KEY), url, strict=True):
            if value:
                st.session_state[key] = value
    pending = st.session_state.pop(_PENDING, None)
    if pending:
        st.session_state[FROM_KEY], st.session_state[TO_KEY] = pending
    legacy = st.query_params.get(RANGE_KEY)
    preset = RANGES.get(legacy) if legacy else None
    defaults = (preset.from_expr, preset.to_expr) if preset else (DEFAULT_FROM, DEFAULT_TO)
    for key, default in zip((FROM_KEY, TO_KEY), defaults, strict=True):
        if key not in st.session_state:
            st.session_state[key] = st.query_params.get(key, default)


def _url_exprs() -> tuple[str | None, str | None]:
    return st.query_params.get(FROM_KEY), st.query_params.get(TO_KEY)


def range_selector() -> Window | None:
    """The sidebar's time range: quick ranges, `from`/`to` fields bound to the URL
    (`?from=2026-03-02T00:00:00Z&to=2026-03-02T06:00:00Z`, `?from=now-6h&to=now`,
    epoch ms) and a date-time picker. Returns the window, or None (with an error
    shown) when the fields cannot be read."""
    _initial_exprs()
    quick = st.sidebar.container()
    st.sidebar.text_input(
        "From",
        key=FROM_KEY,
        bind="query-params",
        help="ISO 8601 (2026-03-02T00:00:00Z), epoch milliseconds, or now-6h, now-1d/d (Grafana's syntax). UTC.",
    )
    st.sidebar.text_input("To", key=TO_KEY, bind="query-params", help="As From; `now` keeps the page live.")
    st.session_state[_URL_SEEN] = _url_exprs()
    win, error = _resolve_current()
    options = [*RANGES, CUSTOM]
    st.session_state[RANGE_KEY] = (win.preset if win else None) or CUSTOM
    quick.selectbox(
        "Time range",
        options,
        key=RANGE_KEY,
        format_func=lambda k: RANGES[k].label if k in RANGES else "Custom (From/To below)",
        on_change=_on_preset,
        help="; ".join(f"{r.label}: {r.bucket_minutes}-minute points" for r in RANGES.values()),
    )
    if error:
        st.sidebar.error(error, icon=":material/error:")
        return None
    _date_time_picker(win)
    st.sidebar.caption(f"{win.label} · {win.bucket_minutes}-minute buckets")
    return win


def _date_time_picker(win: Window) -> None:
    """An absolute range from two date-time inputs, applied as ISO from/to."""
    if st.session_state.get(_PICKED_FOR) != (win.from_expr, win.to_expr):
        st.session_state[_PICK_START] = win.start.replace(second=0, microsecond=0)
        st.session_state[_PICK_END] = win.end.replace(second=0, microsecond=0)
        st.session_state[_PICKED_FOR] = (win.from_expr, win.to_expr)
    expander = st.sidebar.expander("Pick dates (UTC)", icon=":material/calendar_month:")
    with expander, st.form("range_picker", border=False):
        st.datetime_input("Start", key=_PICK_START, format="YYYY-MM-DD", step=timedelta(minutes=15))
        st.datetime_input("End", key=_PICK_END, format="YYYY-MM-DD", step=timedelta(minutes=15))
        st.form_submit_button("Apply", on_click=_on_pick)


def _resolve_current(now: datetime | None = None) -> tuple[Window | None, str | None]:
    try:
        win = ranges.resolve(st.session_state.get(FROM_KEY), st.session_state.get(TO_KEY), now or utcnow())
        return win, None
    except RangeError as exc:
        return None, str(exc)


def current_window() -> Window:
    """THE time range of the page: (start, end, bucket) resolved now, from the
    sidebar's from/to. Call it inside a live fragment so a relative range moves
    with each refresh. An unreadable from/to falls back to the default range
    (the sidebar shows the error)."""
    win, _ = _resolve_current()
    return win or ranges.resolve(DEFAULT_FROM, DEFAULT_TO, utcnow())


def current_range() -> TimeRange:
    """The preset of the current window (the default when it is a custom range): older callers."""
    return get_range(current_window().preset)


def range_params() -> dict[str, str]:
    """`from`/`to` of the current range, for links that keep it (st.page_link(query_params=...))."""
    return current_window().params()


def page_link(page: str, label: str, icon: str | None = None, **params: str) -> None:
    """A link to another page that keeps the time range (plus any extra query parameters)."""
    st.page_link(page, label=label, icon=icon, query_params={**range_params(), **params})


def _jump(from_expr: str, to_expr: str) -> None:
    # Not _set_range: this runs in a fragment's rerun, whose widget states would
    # overwrite the sidebar's fields on the full rerun; the next full run applies it.
    st.session_state[_PENDING] = (from_expr, to_expr)
    if RANGE_KEY in st.query_params:
        del st.query_params[RANGE_KEY]


def empty_range(message: str, win: Window, newest: datetime | None, *, key: str) -> None:
    """An empty range: say why, when the newest data is, and offer to jump there."""
    if newest is None or win.start <= newest < win.end:
        empty_state(message)
        return
    where = "after" if newest >= win.end else "before"
    empty_state(f"{message} The newest data is at {newest:%Y-%m-%d %H:%M} UTC, {where} this range.")
    target = ranges.jump_to(newest, win.span, win.bucket)
    if st.button(
        f"Show {target[0][:16].replace('T', ' ')} to {target[1][:16].replace('T', ' ')} UTC",
        key=key,
        icon=":material/history:",
        on_click=_jump,
        args=target,
        help="The same span, ending at the newest data (absolute from/to, so the link can be shared).",
    ):
        st.rerun()  # inside a live fragment: redraw the whole page with the new range


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
