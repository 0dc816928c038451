"""Charts for the dashboard (pure: DataFrames in, Plotly figures or the overview's uPlot payload out).

Colours are stable per service (assigned from the sorted service names), so a
service keeps its colour across charts and pages, whatever its name.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

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
        legend=dict(orientation="h", yanchor="top", y=-62 / (height - 50), xanchor="left", x=0, title=None),
    )
    fig.update_xaxes(title=None)
    return fig


# --- time series (the overview's panels, drawn by dashboard/time_series.py with uPlot) ---
# A JSON payload, not a figure: every service's values aligned on one shared time axis
# (null where a service has no window in a bucket, so the line breaks there).


class _Panel(NamedTuple):
    id: str
    title: str
    column: str  # the series column it draws
    y_label: str
    unit: str  # how the browser formats values: "rate", "pct" or "ms"
    height: int  # plot height in px
    wide: bool  # the full width, else one of two columns
    legend: bool
    label_incidents: bool  # incident names over the shading


_PANELS = (
    _Panel("requests", "Request rate", "request_rate", "requests / s", "rate", 300, False, True, True),
    _Panel("errors", "Error rate (5xx / requests)", "error_rate", "error rate", "pct", 300, False, True, False),
    _Panel("p50", "Latency p50 (ms)", "p50_latency_ms", "ms", "ms", 200, True, False, False),
    _Panel("p95", "Latency p95 (ms)", "p95_latency_ms", "ms", "ms", 200, True, False, False),
    _Panel("p99", "Latency p99 (ms)", "p99_latency_ms", "ms", "ms", 200, True, True, False),
)


def _epoch_s(times) -> int:
    return int(pd.Timestamp(times).value // 1_000_000_000)


def incident_spans(incidents: pd.DataFrame, now: datetime, start: datetime) -> list[dict]:
    """One span per incident in epoch seconds, clipped to the range's start (open ones up to now)."""
    spans: list[dict] = []
    if incidents is None or incidents.empty:
        return spans
    for inc in incidents.itertuples(index=False):
        x0 = max(pd.Timestamp(inc.started_at), pd.Timestamp(start))
        x1 = pd.Timestamp(inc.ended_at) if inc.ended_at is not None and not pd.isna(inc.ended_at) else pd.Timestamp(now)
        if x1 < x0:
            continue
        spans.append(dict(x0=_epoch_s(x0), x1=_epoch_s(x1), label=f"incident: {inc.service}"))
    return spans


def _column(wide: pd.DataFrame, column: str, services: list[str]) -> list[list[float | None]]:
    """One list per service (in `services` order), NaN as null (JSON has no NaN)."""
    out = []
    for service in services:
        values = wide[(column, service)].to_numpy(dtype=float)
        out.append([None if np.isnan(v) else float(v) for v in values])
    return out


def overview_panels(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> dict:
    """The overview's five panels (request rate, error rate, p50, p95, p99): one line per
    service in its stable colour, incidents shaded on every panel and named on the first."""
    services = sorted(series["service"].unique())
    colors = service_colors(services)
    columns = [p.column for p in _PANELS]
    # one row per (bucket, service) from the query: a plain reshape, no aggregation
    wide = series.pivot(index="bucket", columns="service", values=columns)
    wide = wide.reindex(columns=pd.MultiIndex.from_product([columns, services])).sort_index()
    x = [_epoch_s(t) for t in wide.index]
    # From the first point drawn to now: the labels of incident shading must not stretch
    # the axis, and a fresh install is not squeezed into a corner.
    first = x[0] if x else _epoch_s(start)
    panels = [
        {**{k: v for k, v in p._asdict().items() if k != "column"}, "values": _column(wide, p.column, services)}
        for p in _PANELS
    ]
    return dict(
        x=x,
        x_range=[first, max(_epoch_s(now), first + 60)],
        services=[dict(name=s, color=colors[s]) for s in services],
        incidents=incident_spans(incidents, now, start),
        incident_fill=INCIDENT_FILL,
        panels=panels,
        sync_key="overview",
    )


def anomaly_timeline(anomalies: pd.DataFrame, start: datetime, now: datetime) -> go.Figure:
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
    # the whole chosen range, so quiet stretches show as quiet; a little room for the newest markers
    fig.update_xaxes(range=[start, now + (now - start) * 0.03])
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
            text=[
                f"{d:.0f} ms" + (f" · {int(c)}" if e else "")
                for d, c, e in zip(rows["duration_ms"], rows["status_code"].fillna(0), errors, strict=True)
            ],
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
