"""Traces: search the trace index; `?trace_id=` opens one trace (waterfall, critical path,
findings, span details, its logs)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import search_box, trace_data, ui
from dashboard.trace_queries import MAX_RESULTS, RESULT_COLUMNS, TraceSearch
from dashboard.trace_view import span_table, waterfall_figure
from observability.traces import analyse, build_tree

st.title("Traces")
start, end, span_label = trace_data.time_span()


def _label(tree, span_id: str | None) -> str:
    if span_id is None or span_id not in tree.spans:
        return "?"
    s = tree.spans[span_id]
    return f"{s.service} {s.endpoint}".strip()


def render_findings(tree, findings) -> None:
    lines = []
    origin = findings.error_origin
    if origin is not None:
        msg = f": {ui.md_escape(origin.error_message)}" if origin.error_message else ""
        lines.append(
            f":red-badge[error origin] **{ui.md_escape(origin.service)} {ui.md_escape(origin.endpoint)}** "
            f"(status {origin.status_code}{msg}), depth {origin.depth}: it failed while its calls succeeded"
        )
    for b in findings.bottlenecks[:5]:
        lines.append(
            f":orange-badge[bottleneck] **{ui.md_escape(b.service)} {ui.md_escape(b.endpoint)}**: "
            f"self time {b.self_ms:,.1f} ms, {b.share:.0%} of the trace"
        )
    for n in findings.n_plus_one[:5]:
        lines.append(
            f":violet-badge[N+1] {n.calls} calls from **{ui.md_escape(_label(tree, n.parent_span_id))}** to "
            f"**{ui.md_escape(n.service)}** `{n.target}` ({n.total_ms:,.1f} ms in all)"
        )
    for q in findings.sequential[:5]:
        lines.append(
            f":blue-badge[sequential] {len(q.span_ids)} calls one after another under "
            f"**{ui.md_escape(_label(tree, q.parent_span_id))}**: {q.elapsed_ms:,.1f} ms; side by side "
            f"{q.parallel_ms:,.1f} ms, saving {q.saving_ms:,.1f} ms if they do not depend on each other"
        )
    if not lines:
        st.caption("No findings: no span over 20 % self time, no repeated calls, no sequential siblings, no errors.")
    for line in lines:
        st.markdown(line)


def render_span_details(tree, table: pd.DataFrame) -> None:
    real = table[table["span_id"].notna()]
    labels = dict(zip(real["span_id"], real["label"], strict=True))
    chosen = st.selectbox("Span", list(labels), format_func=labels.get, key="trace_span")
    if chosen is None:
        return
    s = tree.spans[chosen]
    row = real.set_index("span_id").loc[chosen]
    left, right = st.columns(2)
    left.markdown(
        f"**Service:** {ui.md_escape(s.service)}  \n**Endpoint:** {ui.md_escape(s.endpoint or '–')}  \n"
        f"**Kind:** {s.kind or 'server'}  \n**Status:** {s.status_code}  \n"
        f"**Error:** {ui.md_escape(s.error_message or '–')}  \n**Span id:** `{s.span_id}`  \n"
        f"**Parent:** `{s.recorded_parent_id or '–'}`{' (missing: orphan)' if s.orphan else ''}"
    )
    left.markdown(
        f"**Start:** +{row.start_ms:,.1f} ms · **duration** {s.duration_ms:,.1f} ms · **self** {row.self_ms:,.1f} ms  \n"
        f"**On the critical path:** {row.critical_ms:,.1f} ms"
        + (f"  \n**Clock skew adjusted:** {s.skew_ms:+,.1f} ms" if s.skew_ms else "")
    )
    with right:
        st.markdown("**Attributes**")
        if s.attributes:
            st.json(s.attributes, expanded=True)
        else:
            st.caption("none")


def render_logs(trace_id: str) -> None:
    logs = trace_data.trace_logs(trace_id)
    if logs.empty:
        ui.empty_state("No log records carry this trace id (services send logs through the OTLP receiver).")
        return
    st.dataframe(
        logs[["timestamp", "service", "severity_text", "body", "span_id"]],
        hide_index=True,
        column_config={
            "timestamp": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS"),
            "severity_text": "severity",
        },
        key="table_trace_logs",
    )


def render_trace(trace_id: str) -> None:
    if st.button("Back to the search", icon=":material/arrow_back:", key="trace_back"):
        del st.query_params["trace_id"]
        st.session_state.pop("trace_id_input", None)  # or the search would open it again
        st.rerun()
    row = trace_data.trace_row(trace_id)
    if row.empty:
        ui.empty_state(
            f"Trace `{trace_id}` is not in the trace index (yet): the streaming job indexes traces as it writes them."
        )
        return
    r = row.iloc[0]
    spans = trace_data.trace_spans(trace_id, r.start_time.to_pydatetime(), r.end_time.to_pydatetime())
    if spans.empty:
        ui.empty_state(f"No spans of trace `{trace_id}` in the bronze layer (past retention?).")
        return
    tree = build_tree(spans.to_dict("records"))
    findings = analyse(tree)
    st.subheader(f"{r.root_service} {r.root_endpoint or ''}".strip())
    cols = st.columns(5)
    cols[0].metric("Duration", ui.fmt_ms(r.duration_ms))
    cols[1].metric("Spans", f"{int(r.span_count):,}")
    cols[2].metric("Errors", f"{int(r.error_count):,}")
    cols[3].metric("Services", f"{len(r.services)}")
    cols[4].metric("Started (UTC)", f"{r.start_time:%H:%M:%S}", help=f"{r.start_time:%Y-%m-%d %H:%M:%S.%f}")
    st.caption(f"Trace `{trace_id}` · services: {', '.join(r.services)}")
    if tree.root.synthetic:
        orphans = sum(s.orphan for s in tree.real_spans())
        st.info(
            f"{orphans} span(s) reference a parent that is not in the trace: they hang under a synthetic root.",
            icon=":material/account_tree:",
        )
    st.markdown("#### Findings")
    render_findings(tree, findings)
    table = span_table(tree, findings)
    st.plotly_chart(waterfall_figure(tree, findings, table), key="chart_trace_waterfall")
    st.dataframe(
        table[
            ["label", "start_ms", "duration_ms", "self_ms", "critical_ms", "status_code", "error_message", "span_id"]
        ],
        hide_index=True,
        column_config={
            "label": "span",
            "start_ms": st.column_config.NumberColumn("start (ms)", format="%.1f"),
            "duration_ms": st.column_config.NumberColumn("duration (ms)", format="%.1f"),
            "self_ms": st.column_config.NumberColumn("self (ms)", format="%.1f"),
            "critical_ms": st.column_config.NumberColumn("critical path (ms)", format="%.1f"),
            "status_code": "status",
        },
        key="table_trace_spans",
    )
    st.markdown("#### Span details")
    render_span_details(tree, table)
    st.markdown("#### Logs of this trace")
    render_logs(trace_id)


def search_form() -> TraceSearch:
    services = [""] + trace_data.services(start, end)
    wanted = st.query_params.get("service", "")
    if wanted and wanted not in services:
        services.append(wanted)
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    service = c1.selectbox(
        "Service",
        services,
        index=services.index(wanted) if wanted in services else 0,
        format_func=lambda s: s or "All services",
        key="trace_service",
    )
    endpoint = c2.text_input("Root endpoint contains", key="trace_endpoint")
    min_ms = c3.number_input("Min duration (ms)", min_value=0.0, value=0.0, step=50.0, key="trace_min_ms")
    errors = c4.checkbox("Errors only", key="trace_errors")
    c5, c6 = st.columns(2)
    trace_id = c5.text_input("Trace id", key="trace_id_input", placeholder="32 hex characters")
    attribute = c6.text_input("Attribute key=value (any span)", key="trace_attribute", placeholder="region=eu")
    return TraceSearch(service or "", endpoint, errors, float(min_ms), trace_id, attribute)


def render_search() -> None:
    search = search_form()
    if search.trace_id.strip():
        st.query_params["trace_id"] = search.trace_id.strip().lower()
        st.rerun()
    try:
        search.attribute_pair()
    except ValueError as exc:
        st.error(str(exc))
        return
    results = trace_data.search(search, start, end)
    if results.empty:
        ui.empty_state(f"No traces in the {span_label} match this search.")
        return
    st.caption(
        f"{len(results)} trace(s), newest first, in the {span_label}"
        + (f" (the first {MAX_RESULTS})" if len(results) >= MAX_RESULTS else "")
        + ". Select a row to open its trace."
    )
    shown = results.assign(
        open=[f"traces?trace_id={t}" for t in results["trace_id"]],
        services=[", ".join(v) for v in results["services"]],
    )
    picked = st.dataframe(
        shown[[c for c in RESULT_COLUMNS if c != "trace_id"] + ["open"]],
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "start_time": st.column_config.DatetimeColumn("start (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS"),
            "root_service": "root service",
            "root_endpoint": "root endpoint",
            "duration_ms": st.column_config.NumberColumn("duration (ms)", format="%.1f"),
            "span_count": "spans",
            "error_count": "errors",
            "open": st.column_config.LinkColumn("trace", display_text=r"trace_id=(\w{8})"),
        },
        key="table_traces",
    )
    rows = picked.selection.rows if picked is not None else []
    if rows:
        st.query_params["trace_id"] = results.iloc[rows[0]]["trace_id"]
        st.rerun()


chosen = st.query_params.get("trace_id")
if chosen:
    render_trace(chosen)
else:
    render_search()
    search_box.search_box("trace_meaning", kind="trace", label="Or search traces by meaning")
