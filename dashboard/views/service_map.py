"""Service map: the call graph of the time range, services coloured by health, edges with
calls per minute, error rate and the callee's p95; a service links to its traces."""

from __future__ import annotations

import streamlit as st

from dashboard import trace_data, ui
from dashboard.service_map import service_map_dot, status_counts
from dashboard.status import service_statuses

st.title("Service map")
start, end, span_label = trace_data.time_span()
edges, health = trace_data.service_map(start, end)
statuses = service_statuses(health.snapshot, health.incidents, health.anomalies) if not health.snapshot.empty else []
services = sorted(set(edges["parent_service"]).union(edges["child_service"]) if not edges.empty else set()) or sorted(
    s.service for s in statuses
)

if edges.empty and not statuses:
    ui.empty_state(f"No calls between services in the {span_label}: the map appears once spans with parents arrive.")
    st.stop()

counts = status_counts(services, statuses)
st.caption(
    f"{len(services)} services, {len(edges)} call edges in the {span_label}. "
    + " · ".join(f"{k}: {v}" for k, v in counts.items() if v)
    + ". Edge labels: calls per minute · error rate · callee p95. Red edges: 1 % errors or more."
)
selected = st.selectbox(
    "Service",
    [""] + services,
    index=([""] + services).index(st.query_params.get("service", ""))
    if st.query_params.get("service", "") in services
    else 0,
    format_func=lambda s: s or "None selected",
    key="map_service",
    help="Outlines the service on the map and links to its traces; clicking a node opens its traces.",
)
st.graphviz_chart(service_map_dot(edges, statuses, selected or None), width="stretch")
legend = " ".join(
    f":{c}-badge[{name}]"
    for name, c in (("incident", "red"), ("degraded", "orange"), ("healthy", "green"), ("no metrics", "gray"))
)
st.markdown(legend)
if selected:
    trace_data.traces_link(f"Traces of {selected} in this range", selected, start, end)
    mine = edges[(edges["parent_service"] == selected) | (edges["child_service"] == selected)]
    st.dataframe(
        mine,
        hide_index=True,
        column_config={
            "parent_service": "caller",
            "child_service": "callee",
            "calls_per_min": st.column_config.NumberColumn("calls/min", format="%.1f"),
            "error_rate": st.column_config.NumberColumn("error rate", format="percent"),
            "callee_p95_ms": st.column_config.NumberColumn("callee p95 (ms)", format="%.0f"),
        },
        key="table_map_edges",
    )
