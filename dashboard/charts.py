"""Plotly figures for the dashboard (pure: DataFrames in, figures out).

Colours are stable per service (assigned from the sorted service names), so a
service keeps its colour across charts and pages, whatever its name.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.status import SEVERITY_COLORS, SEVERITY_ORDER, as_list

PALETTE = px.colors.qualitative.Plotly + px.colors.qualitative.D3
INCIDENT_FILL = "rgba(214, 40, 40, 0.13)"
_MARGIN = dict(l=10, r=10, t=40, b=10)


def service_colors(services) -> dict[str, str]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(sorted(set(services)))}


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"),
        height=height,
        margin=_MARGIN,
        hovermode="x unified",
        legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0, title=None),
    )
    fig.update_xaxes(title=None)
    return fig


def shade_incidents(fig: go.Figure, incidents: pd.DataFrame, now: datetime, *, start: datetime, label: bool = True, all_rows: bool = False) -> go.Figure:
    """Shade each incident's span (open ones up to now) on a time-axis figure."""
    if incidents is None or incidents.empty:
        return fig
    for inc in incidents.itertuples(index=False):
        x0 = max(pd.Timestamp(inc.started_at), pd.Timestamp(start))
        x1 = pd.Timestamp(inc.ended_at) if inc.ended_at is not None and not pd.isna(inc.ended_at) else pd.Timestamp(now)
        if x1 < x0:
            continue
        extra: dict = {"row": "all", "col": 1} if all_rows else {}
        if label:  # plotly writes "new text" for an annotation without text
            extra.update(annotation_text=f"incident: {inc.service}", annotation_position="top left", annotation_font_size=10)
        fig.add_vrect(x0=x0, x1=x1, fillcolor=INCIDENT_FILL, line_width=0, layer="below", **extra)
    return fig


def _service_lines(fig: go.Figure, series: pd.DataFrame, column: str, colors: dict[str, str], *, row=None, showlegend=True, hover: str = "") -> None:
    for service, part in series.groupby("service", sort=True):
        trace = go.Scatter(
            x=part["bucket"],
            y=part[column],
            name=service,
            legendgroup=service,
            showlegend=showlegend,
            mode="lines",
            line=dict(color=colors[service], width=1.6),
            hovertemplate=f"{service}: %{{y{hover}}}<extra></extra>",
        )
        if row is None:
            fig.add_trace(trace)
        else:
            fig.add_trace(trace, row=row, col=1)


def request_rate_chart(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> go.Figure:
    fig = go.Figure()
    _service_lines(fig, series, "request_rate", service_colors(series["service"]), hover=":.1f")
    fig.update_yaxes(title="requests / s", rangemode="tozero")
    shade_incidents(fig, incidents, now, start=start)
    return _layout(fig, "Request rate", 320)


def error_rate_chart(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> go.Figure:
    fig = go.Figure()
    _service_lines(fig, series, "error_rate", service_colors(series["service"]), hover=":.2%")
    fig.update_yaxes(title="error rate", tickformat=".1%", rangemode="tozero")
    shade_incidents(fig, incidents, now, start=start, label=False)
    return _layout(fig, "Error rate (5xx / requests)", 320)


def latency_chart(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> go.Figure:
    """p50, p95 and p99 stacked with a shared time axis; one line per service."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=("p50", "p95", "p99"))
    colors = service_colors(series["service"])
    for row, p in enumerate(("p50", "p95", "p99"), start=1):
        _service_lines(fig, series, f"{p}_latency_ms", colors, row=row, showlegend=row == 1, hover=":.0f")
        fig.update_yaxes(title_text="ms", rangemode="tozero", row=row, col=1)
    shade_incidents(fig, incidents, now, start=start, label=False, all_rows=True)
    return _layout(fig, "Latency (ms)", 560)


def anomaly_timeline(anomalies: pd.DataFrame) -> go.Figure:
    """One marker per anomaly: time by service, coloured by severity, sized by score."""
    df = anomalies.copy()
    df["size"] = 6 + 14 * df["score"].clip(0, 1).fillna(0)
    known = [s for s in SEVERITY_ORDER if s in set(df["severity"])]
    others = sorted(set(df["severity"]) - set(SEVERITY_ORDER))
    fig = px.scatter(
        df,
        x="window_start",
        y="service",
        color="severity",
        symbol="anomaly_type",
        size="size",
        size_max=18,
        category_orders={"severity": known + others, "service": sorted(df["service"].unique())},
        color_discrete_map=SEVERITY_COLORS,
        hover_data={"anomaly_type": True, "score": ":.2f", "size": False, "window_start": "|%Y-%m-%d %H:%M"},
    )
    fig.update_yaxes(title=None, type="category")
    fig.update_layout(hovermode="closest")
    height = max(260, 60 + 36 * df["service"].nunique())
    fig = _layout(fig, "Anomalies by service (colour: severity, shape: type, size: score)", height)
    fig.update_layout(hovermode="closest")
    return fig


def detector_scores_chart(scores: pd.DataFrame) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=scores["max_score"],
            y=scores["detector"],
            orientation="h",
            marker_color="#f3722c",
            text=[f"{v:.2f}" for v in scores["max_score"]],
            textposition="auto",
            hovertemplate="%{y}: max %{x:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(range=[0, 1.05], title="score (max over the incident)")
    fig.update_yaxes(autorange="reversed", title=None)
    return _layout(fig, "Detector scores", 80 + 40 * len(scores))


def waterfall_chart(rows: pd.DataFrame) -> go.Figure:
    """Horizontal bars: each span from its start offset for its duration."""
    colors = service_colors(rows["service"])
    errors = pd.to_numeric(rows["status_code"], errors="coerce").fillna(0) >= 500
    fig = go.Figure(
        go.Bar(
            base=rows["start_ms"],
            x=rows["duration_ms"].clip(lower=0.5),
            y=rows["label"],
            orientation="h",
            marker=dict(
                color=[colors[s] for s in rows["service"]],
                line=dict(color=["#d62828" if e else "rgba(0,0,0,0)" for e in errors], width=2),
            ),
            text=[f"{d:.0f} ms" + (f" · {int(c)}" if e else "") for d, c, e in zip(rows["duration_ms"], rows["status_code"].fillna(0), errors)],
            textposition="outside",
            customdata=rows[["service", "endpoint", "status_code", "error_message"]].astype(str).values,
            hovertemplate="%{customdata[0]} %{customdata[1]}<br>start +%{base:.0f} ms, %{x:.0f} ms"
            "<br>status %{customdata[2]}<br>%{customdata[3]}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category", title=None)
    fig.update_xaxes(title="ms since the trace began", rangemode="tozero")
    fig = _layout(fig, "Trace waterfall", 120 + 28 * len(rows))
    fig.update_layout(hovermode="closest", showlegend=False)
    return fig


def dead_letter_chart(by_reason: pd.DataFrame) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=by_reason["records"],
            y=by_reason["reason"],
            orientation="h",
            marker_color="#6c757d",
            hovertemplate="%{y}: %{x}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title=None, automargin=True)
    fig.update_xaxes(title="records")
    return _layout(fig, "Dead letters by reason", 100 + 32 * len(by_reason))


def related_services_text(row) -> str:
    related = [s for s in as_list(row.related_services) if s != row.service]
    return ", ".join(related) if related else "none"
