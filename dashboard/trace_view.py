"""One trace drawn: the span table and the waterfall with the critical path (pure; Plotly).

Input is an analysed `observability.traces` tree; times are shown in ms since the
trace's start. Bars are the spans (by service colour, a red outline when failed);
the black strips on top are the critical path's sections.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import service_colors
from observability.traces import Findings, TraceTree, critical_time

SPAN_COLUMNS = [
    "order",
    "depth",
    "label",
    "service",
    "endpoint",
    "start_ms",
    "duration_ms",
    "self_ms",
    "critical_ms",
    "status_code",
    "error_message",
    "span_id",
    "parent_span_id",
    "skew_ms",
    "orphan",
]


def span_table(tree: TraceTree, findings: Findings) -> pd.DataFrame:
    """One row per span in waterfall order (the synthetic root included when there is one)."""
    t0 = tree.start_ms
    on_path = critical_time(findings.critical_path)
    rows = []
    for order, span_id in enumerate(tree.order):
        s = tree.spans[span_id]
        rows.append(
            {
                "order": order,
                "depth": s.depth,
                "label": f"{order + 1:>2}. {'· ' * s.depth}{s.service} {s.endpoint}".rstrip(),
                "service": s.service,
                "endpoint": s.endpoint,
                "start_ms": s.start_ms - t0,
                "duration_ms": s.duration_ms,
                "self_ms": findings.self_ms.get(span_id, 0.0),
                "critical_ms": on_path.get(span_id, 0.0),
                "status_code": s.status_code,
                "error_message": s.error_message,
                "span_id": None if s.synthetic else s.span_id,
                "parent_span_id": s.recorded_parent_id,
                "skew_ms": s.skew_ms,
                "orphan": s.orphan,
            }
        )
    return pd.DataFrame(rows, columns=SPAN_COLUMNS)


def waterfall_figure(tree: TraceTree, findings: Findings, table: pd.DataFrame | None = None) -> go.Figure:
    """Span bars plus the critical path strips, one row per span."""
    table = span_table(tree, findings) if table is None else table
    colors = service_colors(table["service"])
    failed = pd.to_numeric(table["status_code"], errors="coerce").fillna(0) >= 500
    label_of = dict(zip(tree.order, table["label"], strict=True))
    spans = go.Bar(
        name="span",
        base=table["start_ms"],
        x=table["duration_ms"].clip(lower=0.3),
        y=table["label"],
        orientation="h",
        marker=dict(
            color=[colors[s] for s in table["service"]],
            opacity=0.55,
            line=dict(color=["#d62828" if f else "rgba(0,0,0,0)" for f in failed], width=2),
        ),
        customdata=table[["service", "endpoint", "status_code", "self_ms", "critical_ms"]].astype(str).values,
        hovertemplate="%{customdata[0]} %{customdata[1]}<br>start +%{base:.1f} ms, %{x:.1f} ms"
        "<br>self %{customdata[3]} ms · on critical path %{customdata[4]} ms<br>status %{customdata[2]}<extra></extra>",
    )
    t0 = tree.start_ms
    path = findings.critical_path
    strips = go.Bar(
        name="critical path",
        base=[s.start_ms - t0 for s in path],
        x=[max(s.duration_ms, 0.3) for s in path],
        y=[label_of[s.span_id] for s in path],
        orientation="h",
        width=0.28,
        marker=dict(color="#111111"),
        hovertemplate="critical path: +%{base:.1f} ms for %{x:.1f} ms<extra></extra>",
    )
    fig = go.Figure([spans, strips])
    fig.update_layout(
        barmode="overlay",
        height=140 + 26 * len(table),
        margin=dict(l=10, r=10, t=40, b=10),
        title=dict(text="Waterfall · black: critical path", x=0, xanchor="left"),
        hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    fig.update_yaxes(autorange="reversed", type="category", title=None, automargin=True)
    fig.update_xaxes(title="ms since the trace began", rangemode="tozero")
    return fig
