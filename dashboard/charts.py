"""Plotly figures for the dashboard (pure: DataFrames in, figures out).

Colours are stable per service (assigned from the sorted service names), so a
service keeps its colour across charts and pages, whatever its name.
"""

from __future__ import annotations

from datetime import datetime

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


# --- time series -------------------------------------------------------------------
# Built as plain dicts and validated once: Plotly's per-call helpers (add_trace,
# add_vrect, make_subplots) cost more than the data. Times travel as epoch
# milliseconds (a compact typed array) on a date axis.


def _epoch_ms(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times).to_numpy(dtype="datetime64[ms]").astype(np.int64)


def incident_shapes(
    incidents: pd.DataFrame, now: datetime, start: datetime, *, label: bool, x_range: list[int] | None = None
) -> tuple[list[dict], list[dict]]:
    """A shaded rectangle over the full plot height per incident (open ones up to now)."""
    shapes: list[dict] = []
    notes: list[dict] = []
    if incidents is None or incidents.empty:
        return shapes, notes
    for inc in incidents.itertuples(index=False):
        x0 = max(pd.Timestamp(inc.started_at), pd.Timestamp(start))
        x1 = pd.Timestamp(inc.ended_at) if inc.ended_at is not None and not pd.isna(inc.ended_at) else pd.Timestamp(now)
        if x1 < x0:
            continue
        x0_ms, x1_ms = int(x0.value // 1_000_000), int(x1.value // 1_000_000)
        shapes.append(
            dict(
                type="rect",
                xref="x",
                yref="paper",
                x0=x0_ms,
                x1=x1_ms,
                y0=0,
                y1=1,
                fillcolor=INCIDENT_FILL,
                line=dict(width=0),
                layer="below",
            )
        )
        if label:
            # a label near the right edge hangs leftwards from the span's end
            right = x_range is not None and x0_ms > x_range[0] + 0.75 * (x_range[1] - x_range[0])
            notes.append(
                dict(
                    x=x1_ms if right else x0_ms,
                    xref="x",
                    y=1,
                    yref="paper",
                    yanchor="bottom",
                    xanchor="right" if right else "left",
                    showarrow=False,
                    text=f"incident: {inc.service}",
                    font=dict(size=10, color="#9d0208"),
                )
            )
    return shapes, notes


def _lines(
    series: pd.DataFrame,
    column: str,
    colors: dict[str, str],
    *,
    yaxis: str = "y",
    showlegend: bool = True,
    fmt: str = "",
) -> list[dict]:
    traces = []
    for service, part in series.groupby("service", sort=True):
        traces.append(
            dict(
                type="scatter",
                mode="lines",
                x=_epoch_ms(part["bucket"]),
                y=part[column].to_numpy(dtype=float),
                name=service,
                legendgroup=service,
                showlegend=showlegend,
                yaxis=yaxis,
                line=dict(color=colors[service], width=1.6),
                hovertemplate=f"{service}: %{{y{fmt}}}<extra></extra>",
            )
        )
    return traces


# Margins that already hold what Plotly pushes into them (the y-axis title and tick labels
# on the left, the date labels and the legend below). Plotly grows a margin that is too
# small and then draws the whole figure again: with the old 10 px margins that was one
# more full draw of each time-series chart in the browser (a third of the overview's
# Plotly draws, measured). A guess that falls short (long names, a narrow window) only
# brings that draw back; one that is too large leaves a little blank under the legend.
_LEFT_MARGIN = 90  # "requests / s" or "error rate" and tick labels up to "100.0%"
# the newest tick's time label is centred on the axis' right end: half of it hangs past the plot
# (by how much depends on the time shown: 10 px was 1 px short at some minutes)
_RIGHT_MARGIN = 40
_BOTTOM_PAD = 12  # px of slack under the legend: the estimate below was 1-2 px short at times
_LEGEND_GAP = 62  # px between the plot's bottom and the legend's top: the two-line date labels
_LEGEND_ROW_PX = 29
_LEGEND_SYMBOL_PX = 40  # a horizontal legend item: symbol and gaps, plus its text
_LEGEND_CHAR_PX = 6.6  # average width of a 12 px character
_HALF_WIDTH_PX, _FULL_WIDTH_PX = 500, 1000  # a chart in one of two columns / the whole wide layout


def legend_rows(names: list[str], width_px: int) -> int:
    """How many rows a horizontal legend of these names takes in a chart `width_px` wide."""
    rows, used = 1, 0.0
    for name in names:
        item = _LEGEND_SYMBOL_PX + _LEGEND_CHAR_PX * len(str(name))
        if used and used + item > width_px:
            rows, used = rows + 1, 0.0
        used += item
    return rows


def _margin(traces: list[dict], height: int, width_px: int) -> dict:
    """The bottom margin Plotly would grow to for the legend under the plot (see `_time_figure`'s
    legend.y: `_LEGEND_GAP` px at the nominal plot height, scaled with the plot area)."""
    names = [t["name"] for t in traces if t.get("showlegend", True)]
    legend_px = _LEGEND_ROW_PX * legend_rows(names, width_px) if names else 0
    k = _LEGEND_GAP / (height - 50)
    bottom = (k * (height - _MARGIN["t"]) + legend_px + _MARGIN["b"]) / (1 + k)
    return dict(_MARGIN, l=_LEFT_MARGIN, r=_RIGHT_MARGIN, b=int(np.ceil(bottom)) + _BOTTOM_PAD)


def _time_figure(
    traces: list[dict],
    title: str,
    height: int,
    incidents,
    now,
    start,
    *,
    label: bool,
    yaxes: dict,
    width_px: int = _HALF_WIDTH_PX,
) -> go.Figure:
    # From the first point drawn to now: the labels of incident shading must not
    # stretch the axis, and a fresh install is not squeezed into a corner.
    first = min((int(t["x"][0]) for t in traces if len(t["x"])), default=int(pd.Timestamp(start).value // 1_000_000))
    x_range = [first, int(pd.Timestamp(now).value // 1_000_000)]
    shapes, notes = incident_shapes(incidents, now, start, label=label, x_range=x_range)
    layout = dict(
        title=dict(text=title, x=0, xanchor="left"),
        height=height,
        margin=_margin(traces, height, width_px),
        hovermode="x unified",
        # below the date tick labels (two lines, ~45 px) whatever the height
        legend=dict(orientation="h", yanchor="top", y=-_LEGEND_GAP / (height - 50), xanchor="left", x=0, title=None),
        xaxis=dict(type="date", title=None, range=x_range),
        shapes=shapes,
        annotations=notes + yaxes.pop("_annotations", []),
        **yaxes,
    )
    return go.Figure(data=traces, layout=layout)


def request_rate_chart(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> go.Figure:
    traces = _lines(series, "request_rate", service_colors(series["service"]), fmt=":.1f")
    return _time_figure(
        traces,
        "Request rate",
        320,
        incidents,
        now,
        start,
        label=True,
        yaxes=dict(yaxis=dict(title="requests / s", rangemode="tozero")),
    )


def error_rate_chart(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> go.Figure:
    traces = _lines(series, "error_rate", service_colors(series["service"]), fmt=":.2%")
    return _time_figure(
        traces,
        "Error rate (5xx / requests)",
        320,
        incidents,
        now,
        start,
        label=False,
        yaxes=dict(yaxis=dict(title="error rate", tickformat=".1%", rangemode="tozero")),
    )


def latency_chart(series: pd.DataFrame, incidents: pd.DataFrame, now: datetime, start: datetime) -> go.Figure:
    """p50, p95 and p99 stacked on one shared time axis; one line per service."""
    colors = service_colors(series["service"])
    # top to bottom p50, p95, p99; the time axis hangs off the bottom one ("y")
    rows = (("p50", "y2", (0.72, 1.0)), ("p95", "y3", (0.36, 0.64)), ("p99", "y", (0.0, 0.28)))
    traces, yaxes, titles = [], {}, []
    for p, axis, domain in rows:
        traces += _lines(series, f"{p}_latency_ms", colors, yaxis=axis, showlegend=p == "p50", fmt=":.0f")
        name = "yaxis" if axis == "y" else f"yaxis{axis[1:]}"
        yaxes[name] = dict(domain=list(domain), title="ms", rangemode="tozero", anchor="x")
        titles.append(
            dict(
                text=p,
                x=0.5,
                xref="paper",
                y=domain[1],
                yref="paper",
                yanchor="bottom",
                showarrow=False,
                font=dict(size=12),
            )
        )
    yaxes["_annotations"] = titles
    return _time_figure(
        traces,
        "Latency (ms) — p50, p95, p99",
        600,
        incidents,
        now,
        start,
        label=False,
        yaxes=yaxes,
        width_px=_FULL_WIDTH_PX,
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
