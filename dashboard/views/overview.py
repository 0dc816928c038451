"""Overview: a status tile per service, then traffic, errors and latency with incidents shaded."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, sla_panel, time_series, trace_data, ui
from dashboard.status import DEGRADED, HEALTHY, INCIDENT, as_list, service_statuses

BADGE = {
    HEALTHY: ("green", ":material/check_circle:"),
    DEGRADED: ("orange", ":material/warning:"),
    INCIDENT: ("red", ":material/error:"),
}
TILES_PER_ROW = 5

st.title("Overview")
known_services = data.overview(ui.current_window()).snapshot
selected = st.multiselect(
    "Services",
    sorted(known_services["service"]) if not known_services.empty else [],
    placeholder="All services",
    key="overview_services",
)


def _render_tiles(statuses, start, end) -> None:
    for i in range(0, len(statuses), TILES_PER_ROW):
        cols = st.columns(TILES_PER_ROW)
        for col, s in zip(cols, statuses[i : i + TILES_PER_ROW], strict=False):  # the last row may be short
            color, icon = BADGE[s.status]
            with col.container(border=True):
                st.markdown(f"**{ui.md_escape(s.service)}**  \n:{color}-badge[{icon} {s.status}]")
                # one caption of two lines, not two captions: ten fewer elements for the browser to lay out
                st.caption(
                    f"{ui.fmt_rate(s.request_rate)} · {ui.fmt_pct(s.error_rate)} errors · "
                    f"p95 {ui.fmt_ms(s.p95_latency_ms)}  \n{ui.md_escape(s.reason)}"
                )
                trace_data.traces_link("traces", s.service, start, end)


def _touches(incidents, services: list[str]):
    """Incidents that involve any of the services (their own, root cause or related)."""
    if not services or incidents.empty:
        return incidents
    wanted = set(services)
    mask = [
        bool(wanted & ({row.service, row.root_cause_service} | set(as_list(row.related_services))))
        for row in incidents.itertuples(index=False)
    ]
    return incidents[mask]


@st.fragment(run_every=ui.refresh_seconds())
def live_overview(services: list[str]) -> None:
    win = ui.current_window()
    now = data.now()
    view = data.overview(win)
    snapshot, incidents, recent = view.snapshot, view.incidents, view.recent_anomalies
    open_incidents = incidents[incidents["status"] == "open"] if not incidents.empty else incidents
    statuses = service_statuses(snapshot, open_incidents, recent)
    if services:
        statuses = [s for s in statuses if s.service in services]
    if not statuses:
        newest = data.newest_data("metrics")
        if newest is None:
            ui.empty_state(
                f"No service metrics {win.phrase} yet. Tiles and charts appear once the "
                "streaming job has closed its first 1-minute window (start the platform with `make local`)."
            )
        else:
            ui.empty_range(f"No service metrics {win.phrase}.", win, newest, key="jump_overview")
        ui.updated_caption(now)
        return
    counts = {k: sum(s.status == k for s in statuses) for k in (INCIDENT, DEGRADED, HEALTHY)}
    st.subheader(f"Services · {counts[INCIDENT]} incident · {counts[DEGRADED]} degraded · {counts[HEALTHY]} healthy")
    _render_tiles(statuses, win.start, min(win.end, now))

    series = view.series
    if services and not series.empty:
        series = series[series["service"].isin(services)]
    if series.empty:
        ui.empty_state(f"No metric windows {win.phrase}.")
        ui.updated_caption(now)
        return
    shaded = _touches(incidents, services)
    start, end = win.start, min(win.end, now)
    st.caption(
        f"{win.label}, {win.bucket_minutes}-minute buckets. Shaded: incidents "
        f"({len(shaded)} in range). Percentiles of multi-minute buckets are request-weighted means."
    )
    time_series.render(charts.overview_panels(series, shaded, end, start), key="overview_charts")
    ui.updated_caption(now)


live_overview(selected)
sla_panel.render_sla_risk()
