"""Health: latest health checks, pipeline lag, dead letters by reason, alert deliveries, model registry."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui
from dashboard.status import format_duration, lag_level, pipeline_lag

STATUS_STYLE = {
    "healthy": "color: #1b7f3b; font-weight: 600",
    "degraded": "color: #b35900; font-weight: 600",
    "unhealthy": "color: #c1121f; font-weight: 600",
}

st.title("Health")


def render_lag(progress: pd.DataFrame, now) -> None:
    st.subheader("Pipeline lag")
    row = progress.iloc[0] if not progress.empty else None
    lag = pipeline_lag(None if row is None else row["max_event_time"], now)
    if lag is None:
        ui.empty_state("The streaming job has not committed a batch yet, so there is no lag to show.")
        return
    level = lag_level(lag)
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Lag (now − newest event time)",
        format_duration(lag),
        help="How far the newest event the stream has processed is behind now.",
    )
    c2.metric("Newest event time", f"{pd.Timestamp(row['max_event_time']):%Y-%m-%d %H:%M:%S}")
    last_batch = pipeline_lag(row["last_batch_at"], now)
    c3.metric(
        "Last batch",
        f"{format_duration(last_batch)} ago",
        help=f"batch {int(row['last_batch_id'])}, {int(row['batches']):,} batches in total",
    )
    if level == "error":
        st.error(
            f"The pipeline is {format_duration(lag)} behind: is the streaming job running?", icon=":material/error:"
        )
    elif level == "warning":
        st.warning(f"The pipeline is {format_duration(lag)} behind.", icon=":material/warning:")


def render_checks(checks: pd.DataFrame, beats: pd.DataFrame, now) -> None:
    st.subheader("Health checks")
    if checks.empty:
        ui.empty_state("No health checks recorded yet: the Airflow monitoring DAG writes them every few minutes.")
    else:
        table = checks.assign(
            age=[format_duration(pipeline_lag(t, now)) for t in checks["checked_at"]],
        )[["component", "status", "detail", "age", "checked_at", "latency_ms"]]
        st.dataframe(
            table.style.map(lambda s: STATUS_STYLE.get(s, ""), subset=["status"]),
            hide_index=True,
            column_config={
                "checked_at": st.column_config.DatetimeColumn("checked (UTC)", format="YYYY-MM-DD HH:mm:ss"),
                "latency_ms": st.column_config.NumberColumn("check took (ms)", format="%.0f"),
            },
            key="table_health",
        )
    if not beats.empty:
        st.caption("Service heartbeats")
        st.dataframe(
            beats.assign(age=[format_duration(pipeline_lag(t, now)) for t in beats["last_seen"]])[
                ["component", "age", "last_seen", "detail"]
            ],
            hide_index=True,
            column_config={
                "last_seen": st.column_config.DatetimeColumn("last seen (UTC)", format="YYYY-MM-DD HH:mm:ss")
            },
            key="table_heartbeats",
        )


def render_dead_letters(by_reason: pd.DataFrame, win) -> None:
    st.subheader("Dead letters")
    if by_reason.empty:
        ui.empty_range(
            f"No dead letters {win.phrase}: every record was valid.",
            win,
            data.newest_data("dead_letters"),
            key="jump_dead_letters",
        )
        return
    st.metric(f"Dead letters ({win.label[0].lower() + win.label[1:]})", f"{int(by_reason['records'].sum()):,}")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.dead_letter_chart(by_reason), key="chart_dead_letters")
    with right:
        st.dataframe(
            by_reason,
            hide_index=True,
            column_config={"last_received": st.column_config.DatetimeColumn("last (UTC)", format="YYYY-MM-DD HH:mm")},
            key="table_dead_letters",
        )


def render_alerts(channels: pd.DataFrame, failures: pd.DataFrame, win) -> None:
    st.subheader("Alert notifications")
    if channels.empty:
        ui.empty_state(
            f"No notification attempts {win.phrase}: the notifier sends incident events "
            "to the channels set by ALERT_WEBHOOK_URLS, ALERT_SLACK_WEBHOOK_URLS and ALERT_SMTP_HOST."
        )
        return
    last = {"last_attempt": st.column_config.DatetimeColumn("last attempt (UTC)", format="YYYY-MM-DD HH:mm:ss")}
    st.dataframe(channels, hide_index=True, column_config=last, key="table_alert_channels")
    if not failures.empty:
        st.caption("Failed notification attempts (newest first; failed ones are retried with backoff)")
        at = {"attempted_at": st.column_config.DatetimeColumn("attempted (UTC)", format="YYYY-MM-DD HH:mm:ss")}
        st.dataframe(failures, hide_index=True, column_config=at, key="table_alert_failures")


def render_models(models: pd.DataFrame) -> None:
    st.subheader("Model registry")
    if models.empty:
        ui.empty_state("No models trained yet: the retraining DAG registers each version here.")
        return
    st.dataframe(
        models,
        hide_index=True,
        column_config={
            "trained_at": st.column_config.DatetimeColumn("trained (UTC)", format="YYYY-MM-DD HH:mm"),
            "promoted": st.column_config.CheckboxColumn("promoted"),
            "metrics": st.column_config.JsonColumn("metrics") if hasattr(st.column_config, "JsonColumn") else "metrics",
        },
        key="table_models",
    )


@st.fragment(run_every=ui.refresh_seconds())
def live_health() -> None:
    now = data.now()
    win = ui.current_window()
    page_data = data.health_page(win)  # one read for the whole page
    render_lag(page_data.progress, now)
    render_checks(page_data.checks, page_data.heartbeats, now)
    render_dead_letters(page_data.dead_letters, win)
    render_alerts(page_data.alert_channels, page_data.alert_failures, win)
    render_models(page_data.models)
    ui.updated_caption(now)


live_health()
