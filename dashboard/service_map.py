"""The service map as Graphviz DOT text (pure: frames in, text out).

Streamlit's `st.graphviz_chart` renders DOT in the browser, so no Graphviz binary is
needed. Nodes are services coloured by health; edges carry calls per minute, error
rate and the callee's p95 latency. At 50 services the graph stays readable: left to
right ranks, small fonts, edge labels only as long as they need to be, and edges drawn
thicker with traffic and red with errors.
"""

from __future__ import annotations

import math
from urllib.parse import quote

import pandas as pd

from dashboard.status import DEGRADED, HEALTHY, INCIDENT, ServiceStatus

NO_METRICS = "no metrics"  # a callee without its own request metrics (e.g. a database)
HEALTH_COLORS = {
    INCIDENT: ("#f8d7da", "#d62828"),  # fill, border
    DEGRADED: ("#fff3cd", "#f3722c"),
    HEALTHY: ("#d8f3dc", "#2d6a4f"),
    NO_METRICS: ("#e9ecef", "#6c757d"),
}
ERROR_EDGE_RATE = 0.01  # edges with at least this error rate are drawn red


def _quoted(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def edge_label(calls_per_min: float, error_rate: float | None, p95_ms: float | None) -> str:
    parts = [f"{calls_per_min:,.1f}/min"]
    if error_rate is not None and not math.isnan(error_rate) and error_rate > 0:
        parts.append(f"{error_rate:.1%} err")
    if p95_ms is not None and not math.isnan(p95_ms):
        parts.append(f"p95 {p95_ms:,.0f} ms")
    return " · ".join(parts)


def node_health(services, statuses: list[ServiceStatus]) -> dict[str, str]:
    by_name = {s.service: s.status for s in statuses}
    return {s: by_name.get(s, NO_METRICS) for s in services}


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def service_map_dot(
    edges: pd.DataFrame, statuses: list[ServiceStatus], selected: str | None = None, link_page: str = "traces"
) -> str:
    """DOT for the call graph; `selected` is outlined bold. Each node links to `link_page?service=`."""
    services = {s.service for s in statuses}
    if not edges.empty:
        services |= set(edges["parent_service"]) | set(edges["child_service"])
    services = sorted(services)
    health = node_health(services, statuses)
    max_calls = max([float(v) for v in edges["calls_per_min"]] or [1.0]) if not edges.empty else 1.0
    lines = [
        "digraph services {",
        '  graph [rankdir=LR, nodesep=0.25, ranksep=0.9, fontname="Helvetica", fontsize=10, bgcolor="transparent"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.15,0.05"];',
        '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.6];',
    ]
    for service in services:
        fill, border = HEALTH_COLORS[health[service]]
        width = 3 if service == selected else 1.2
        lines.append(
            f"  {_quoted(service)} [fillcolor={_quoted(fill)}, color={_quoted(border)}, penwidth={width}, "
            f"tooltip={_quoted(f'{service}: {health[service]}')}, URL={_quoted(f'{link_page}?service={quote(service)}')}, "
            'target="_top"];'
        )
    for row in edges.itertuples(index=False):
        rate, err, p95 = float(row.calls_per_min), _num(row.error_rate), _num(row.callee_p95_ms)
        color = "#d62828" if err is not None and err >= ERROR_EDGE_RATE else "#6c757d"
        pen = 0.8 + 3.2 * math.sqrt(rate / max_calls) if max_calls > 0 else 1.0
        lines.append(
            f"  {_quoted(row.parent_service)} -> {_quoted(row.child_service)} "
            f"[label={_quoted(edge_label(rate, err, p95))}, color={_quoted(color)}, "
            f"fontcolor={_quoted(color)}, penwidth={pen:.2f}];"
        )
    lines.append("}")
    return "\n".join(lines)


def status_counts(services, statuses: list[ServiceStatus]) -> dict[str, int]:
    health = node_health(services, statuses)
    return {k: sum(v == k for v in health.values()) for k in (INCIDENT, DEGRADED, HEALTHY, NO_METRICS)}
