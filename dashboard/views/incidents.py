"""Incidents: each one with its summary (and, when the model's text was refused, the
claims that failed the check), facts, similar past incidents, detector scores,
baseline against observed, related services, root cause and its ranked candidates
(score and evidence), a waterfall of a sample
trace, and its error logs (OTLP logs of its services and sample traces)."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboard import charts, data, search_box, trace_data, ui
from dashboard.status import as_dict, as_list, baseline_vs_observed, detector_scores, format_duration
from dashboard.traces import waterfall_rows

TRACE_SLACK = timedelta(minutes=15)

st.title("Incidents")


def _label(row) -> str:
    return f"{row.service} · {row.peak_severity} · {row.status} · started {pd.Timestamp(row.started_at):%Y-%m-%d %H:%M} UTC"


def _prose(text: str) -> str:
    """LLM prose as markdown, without `$` turning into LaTeX."""
    return str(text).replace("$", "\\$")


def render_summary(inc) -> None:
    if inc.summary is None or pd.isna(inc.summary):
        ui.empty_state("No summary yet: the narrator writes one shortly after an incident opens or changes.")
        return
    facts = as_dict(inc.facts)
    if inc.generated_by == "template":
        reason = facts.get("template_reason")
        st.warning(
            "**Template summary**: written from the facts by the fallback template, not by the LLM "
            f"({ui.md_escape(reason) if reason else 'the model was unavailable or its answer was rejected'}).",
            icon=":material/description:",
        )
    with st.container(border=True):
        st.markdown(_prose(inc.summary))
    who = "the fallback template" if inc.generated_by == "template" else f"the LLM ({inc.model or 'unknown model'})"
    took = (
        ""
        if inc.summary_latency_ms is None or pd.isna(inc.summary_latency_ms)
        else f" in {inc.summary_latency_ms / 1000:.1f} s"
    )
    st.caption(f"Written by {who}{took} at {pd.Timestamp(inc.summary_created_at):%Y-%m-%d %H:%M:%S} UTC")
    render_refused(facts)


def render_refused(facts: dict) -> None:
    """The model's refused texts and the claims that failed the check, by kind (a reviewer's view)."""
    failures = facts.get("claim_failures") or []
    if not failures:
        return
    rejected = {r.get("attempt"): r for r in facts.get("rejected_summaries") or []}
    with st.expander(f"Refused model text: {len(failures)} failing claim(s)", icon=":material/rule:"):
        for attempt in sorted({f.get("attempt") for f in failures}, key=str):
            r = rejected.get(attempt, {})
            st.markdown(f"**Attempt {attempt}:** {_prose(r.get('text', ''))}")
            if r.get("dropped_sentence"):
                st.caption(f"Kept without this sentence, whose claims failed: {r['dropped_sentence']}")
            st.dataframe(
                pd.DataFrame([f for f in failures if f.get("attempt") == attempt], columns=["kind", "claim", "reason"]),
                hide_index=True,
                key=f"table_claims_{attempt}",
            )


def render_similar(similar: pd.DataFrame) -> None:
    if similar.empty:
        ui.empty_state("No similar earlier incident (same service, anomaly type, root cause or error message).")
        return
    st.dataframe(
        similar.drop(columns=["id"]),
        hide_index=True,
        column_config={
            "started_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm"),
            "anomaly_types": "anomaly types",
            "minutes": st.column_config.NumberColumn("lasted (min)", format="%d"),
            "root_cause_service": "root cause",
            "shared": "similar by",
            "summary": st.column_config.TextColumn("summary", width="large"),
        },
        key="table_similar",
    )


def root_cause_candidates(inc) -> pd.DataFrame:
    """The detector's ranked candidates (incidents.root_cause_candidates JSON), best first."""
    raw = getattr(inc, "root_cause_candidates", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    rows = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
    table = pd.DataFrame(rows, columns=["service", "score", "evidence"])
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def render_candidates(inc) -> None:
    table = root_cause_candidates(inc)
    if table.empty:
        ui.empty_state("No ranked root-cause candidates (no spans of this incident in the bronze layer).")
        return
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.2f"),
            "evidence": st.column_config.TextColumn("evidence", width="large"),
        },
        key="table_root_cause_candidates",
    )


def render_facts(inc) -> None:
    facts = as_dict(inc.facts)
    with st.expander("Facts the summary is grounded on", expanded=False, icon=":material/fact_check:"):
        if facts:
            st.json(facts, expanded=2)
        else:
            st.caption("No facts recorded.")


def render_scores(anomalies: pd.DataFrame) -> None:
    if anomalies.empty:
        ui.empty_state("No anomaly rows for this incident's span (retention may have removed them).")
        return
    scores = detector_scores(anomalies)
    left, right = st.columns(2)
    with left:
        if scores.empty:
            st.caption("No detector scores recorded.")
        else:
            st.plotly_chart(charts.detector_scores_chart(scores), key="chart_detectors")
    with right:
        peak = anomalies.loc[anomalies["score"].idxmax()]
        st.markdown(
            f"**Baseline against observed** (peak window {pd.Timestamp(peak.window_start):%H:%M} UTC, "
            f"{ui.md_escape(peak.anomaly_type)}, score {peak.score:.2f})"
        )
        table = baseline_vs_observed(peak)
        if table.empty:
            st.caption("No baseline recorded.")
        else:
            st.dataframe(
                table,
                hide_index=True,
                column_config={"observed / baseline": st.column_config.NumberColumn(format="%.2f×")},
                key="table_baseline",
            )


def incident_services(inc) -> list[str]:
    """The incident's service, its related services and its likely root cause."""
    services = {inc.service, *as_list(inc.related_services)}
    if isinstance(inc.root_cause_service, str):
        services.add(inc.root_cause_service)
    return sorted(services)


def sample_traces(anomalies: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Trace ids to drill into: the anomalies' samples first, then trace_samples rows."""
    rows = []
    for a in anomalies.itertuples(index=False):
        for trace_id in as_list(a.sample_trace_ids):
            rows.append(
                {"trace_id": trace_id, "service": a.service, "window_start": a.window_start, "reason": "anomaly sample"}
            )
    if not samples.empty:
        rows += samples[["trace_id", "service", "window_start", "reason"]].to_dict("records")
    if not rows:
        return pd.DataFrame(columns=["trace_id", "service", "window_start", "reason"])
    return pd.DataFrame(rows).drop_duplicates("trace_id", keep="first").reset_index(drop=True)


def render_traces(inc, traces: pd.DataFrame) -> None:
    if traces.empty:
        ui.empty_state("No sample traces recorded for this incident.")
        return
    labels = {r.trace_id: f"{r.trace_id} · {r.service} · {r.reason}" for r in traces.itertuples(index=False)}
    trace_id = st.selectbox("Sample trace", list(labels), format_func=labels.get, key=f"trace_{inc.id}")
    trace_data.trace_link(trace_id)
    around = pd.Timestamp(traces.set_index("trace_id").at[trace_id, "window_start"]).to_pydatetime()
    spans = data.trace_spans(trace_id, around, TRACE_SLACK)
    rows = waterfall_rows(spans)
    if rows.empty:
        ui.empty_state(f"No spans of trace {trace_id} in the bronze layer (it may be past retention).")
        return
    st.plotly_chart(charts.waterfall_chart(rows), key="chart_waterfall")
    st.dataframe(
        rows[["label", "start_ms", "duration_ms", "status_code", "error_message", "span_id", "parent_span_id"]],
        hide_index=True,
        column_config={
            "label": "span",
            "start_ms": st.column_config.NumberColumn("start (ms)", format="%.1f"),
            "duration_ms": st.column_config.NumberColumn("duration (ms)", format="%.1f"),
        },
        key="table_spans",
    )


def render_error_logs(logs: pd.DataFrame) -> None:
    """Error logs of the incident's services in its span (a minute either side), and of its sample traces."""
    if logs.empty:
        ui.empty_state(
            "No error logs for this incident's services or sample traces "
            "(services send logs through the OTLP receiver)."
        )
        return
    st.caption(f"{len(logs)} error log records, newest first; `trace` rows belong to a sample trace.")
    st.dataframe(
        logs[["timestamp", "service", "severity_text", "body", "trace_id", "span_id", "matched"]],
        hide_index=True,
        column_config={
            "timestamp": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS"),
            "severity_text": "severity",
            "matched": "shown for",
        },
        key="table_error_logs",
    )


def render_incident(inc, now) -> None:
    st.subheader(_label(inc))
    left, right = st.columns([2, 1])
    with left:
        render_summary(inc)
    with right:
        ended = inc.ended_at if inc.ended_at is not None and not pd.isna(inc.ended_at) else None
        duration = (pd.Timestamp(ended or now) - pd.Timestamp(inc.started_at)).to_pytimedelta()
        related = charts.related_services_text(inc)
        st.markdown(
            f"**Status:** {inc.status}  \n"
            f"**Peak severity:** {ui.md_escape(inc.peak_severity)}  \n"
            f"**Started:** {pd.Timestamp(inc.started_at):%Y-%m-%d %H:%M} UTC  \n"
            f"**Duration:** {format_duration(duration)}{'' if ended else ' (ongoing)'}  \n"
            f"**Likely root cause:** {ui.md_escape(inc.root_cause_service or 'unknown')}  \n"
            f"**Related services:** {ui.md_escape(related)}"
        )
        trace_data.traces_link(
            f"Traces of {inc.service} during the incident",
            inc.service,
            pd.Timestamp(inc.started_at) - timedelta(minutes=1),
            pd.Timestamp(ended or now) + timedelta(minutes=1),
        )
    st.markdown("#### Root-cause candidates")
    render_candidates(inc)
    render_facts(inc)
    # similar incidents, anomalies, trace samples and error logs: one read
    detail = data.incident_detail(
        inc.id, inc.service, incident_services(inc), inc.started_at, inc.ended_at if not pd.isna(inc.ended_at) else None
    )
    st.markdown("#### Similar past incidents")
    render_similar(detail.similar)
    st.markdown("#### Detectors")
    render_scores(detail.anomalies)
    traces = sample_traces(detail.anomalies, detail.trace_samples)
    st.markdown("#### Sample traces")
    render_traces(inc, traces)
    st.markdown("#### Error logs")
    render_error_logs(detail.error_logs)


def linked_incident() -> str | None:
    """The incident a link opens: `?incident=` (notifications) or `?incident_id=` (search results)."""
    return st.query_params.get("incident") or st.query_params.get("incident_id")


@st.fragment(run_every=ui.refresh_seconds())
def live_incidents() -> None:
    win = ui.current_window()
    now = data.now()
    incidents = data.incidents(win)
    if incidents.empty:
        ui.empty_range(
            f"No incidents {win.phrase}. Anomalies close together on a service open one.",
            win,
            data.newest_data("incidents"),
            key="jump_incidents",
        )
        ui.updated_caption(now)
        return
    overview = incidents.assign(
        summary_by=incidents["generated_by"].fillna("pending"),
        related=[", ".join(as_list(v)) for v in incidents["related_services"]],
    )[["service", "status", "peak_severity", "started_at", "ended_at", "root_cause_service", "related", "summary_by"]]
    st.dataframe(
        overview,
        hide_index=True,
        column_config={
            "started_at": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm"),
            "ended_at": st.column_config.DatetimeColumn("ended (UTC)", format="YYYY-MM-DD HH:mm"),
            "root_cause_service": "root cause",
            "summary_by": "summary",
        },
        key="table_incidents",
    )
    by_id = {row.id: row for row in incidents.itertuples(index=False)}
    linked = linked_incident()
    ids = list(by_id)
    if linked and linked not in by_id:
        st.info(f"Incident {ui.md_escape(linked)} is not {win.phrase}: widen the time range to see it.")
    chosen = st.selectbox(
        "Incident",
        ids,
        index=ids.index(linked) if linked in by_id else 0,
        format_func=lambda i: _label(by_id[i]),
        key="incident_id",
    )
    render_incident(by_id[chosen], now)
    ui.updated_caption(now)


search_box.search_box("incident_search", kind="incident", label="Search past incidents by meaning")
live_incidents()
