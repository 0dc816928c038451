"""Anomalies: a timeline coloured by severity, filtered by service, severity and type."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, trace_data, ui
from dashboard.status import as_list, severity_rank

st.title("Anomalies")
options = data.anomalies(ui.current_window())


def _choices(column: str, order=None) -> list[str]:
    if options.empty:
        return []
    values = set(options[column].dropna())
    return sorted(values, key=order) if order else sorted(values)


c1, c2, c3 = st.columns(3)
services = c1.multiselect("Service", _choices("service"), placeholder="All services", key="anomaly_services")
severities = c2.multiselect(
    "Severity",
    _choices("severity", order=lambda s: (severity_rank(s), s)),
    placeholder="All severities",
    key="anomaly_severities",
)
types = c3.multiselect("Type", _choices("anomaly_type"), placeholder="All types", key="anomaly_types")


def filter_anomalies(df: pd.DataFrame, services: list[str], severities: list[str], types: list[str]) -> pd.DataFrame:
    """An empty filter means "all"."""
    if df.empty:
        return df
    mask = pd.Series(True, index=df.index)
    if services:
        mask &= df["service"].isin(services)
    if severities:
        mask &= df["severity"].isin(severities)
    if types:
        mask &= df["anomaly_type"].isin(types)
    return df[mask]


@st.fragment(run_every=ui.refresh_seconds())
def live_anomalies(services: list[str], severities: list[str], types: list[str]) -> None:
    win = ui.current_window()
    now = data.now()
    df = data.anomalies(win)
    if df.empty:
        ui.empty_range(
            f"No anomalies {win.phrase}. The detector flags them as metric windows arrive.",
            win,
            data.newest_data("anomalies"),
            key="jump_anomalies",
        )
        ui.updated_caption(now)
        return
    shown = filter_anomalies(df, services, severities, types)
    if shown.empty:
        ui.empty_state("No anomalies match these filters.")
        ui.updated_caption(now)
        return
    by_severity = shown["severity"].value_counts()
    cols = st.columns(1 + len(by_severity))
    cols[0].metric("Anomalies shown", f"{len(shown):,}", help=f"of {len(df):,} in the range")
    for col, sev in zip(cols[1:], sorted(by_severity.index, key=lambda s: (severity_rank(s), s)), strict=True):
        col.metric(sev, f"{by_severity[sev]:,}")
    st.plotly_chart(charts.anomaly_timeline(shown, win.start, min(win.end, now)), key="chart_anomalies")
    table = shown.assign(
        sample_traces=[len(as_list(v)) for v in shown["sample_trace_ids"]],
        traces=[trace_data.traces_url(r.service, r.window_start, r.window_end) for r in shown.itertuples()],
    )[["window_start", "service", "severity", "anomaly_type", "score", "detected_at", "sample_traces", "traces", "id"]]
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "window_start": st.column_config.DatetimeColumn("window (UTC)", format="YYYY-MM-DD HH:mm"),
            "detected_at": st.column_config.DatetimeColumn("detected (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.2f"),
            "anomaly_type": "type",
            "traces": st.column_config.LinkColumn("traces", display_text="traces of the window"),
        },
        key="table_anomalies",
    )
    ui.updated_caption(now)


live_anomalies(services, severities, types)
