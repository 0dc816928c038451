"""The deterministic summary, built from the facts alone (the fallback).

Every sentence only places fact values, in the facts' order of importance (the
defining symptom first), so it passes the grounding check by construction (a
test re-checks it); used when the model's text failed the check twice or the
model server refused the request.
"""

from __future__ import annotations

from llm.facts import CALLEES, CALLERS, CANDIDATES, METRIC_KEYS, METRIC_WORDS, SIMILAR, SYMPTOM_METRIC


def template_summary(facts: dict) -> str:
    f = facts
    types = [t.strip() for t in f["anomaly_types"].split(",")]
    symptom_keys = {SYMPTOM_METRIC[t] for t in types if t in SYMPTOM_METRIC}
    parts = [
        f"{f['affected_service']} had a {f['severity']}-severity incident ({f['anomaly_types']}, {f['status']}) {f['time_range']}.",
        f"Symptom: {f['symptom']}.",
        f"Likely root cause: {f['root_cause_service']}; related services: {f['related_services']}.",
    ]
    if f.get(CANDIDATES):
        parts.append(f"Root-cause candidates: {f[CANDIDATES]}.")
    others = [k for k in METRIC_KEYS if k in f and k not in symptom_keys]
    parts += [f"{METRIC_WORDS[k][0].upper()}{METRIC_WORDS[k][1:]}: {f[k]}." for k in others]
    parts += [
        f"Top errors: {f['top_errors']}.",
        *([f"Error logs: {f['error_logs']}."] if f.get("error_logs") else []),
        f"Most affected endpoints: {f['affected_endpoints']}.",
    ]
    if f.get(CALLERS):
        parts.append(f"Called by: {f[CALLERS]}.")
    if f.get(CALLEES):
        parts.append(f"Calls: {f[CALLEES]}.")
    parts.append(f"Sample traces: {f['sample_trace_ids']}.")
    similar = f.get(SIMILAR) or []
    if isinstance(similar, str):
        similar = [similar]
    if similar:
        parts.append("Similar past incidents: " + "; ".join(similar) + ".")
    return " ".join(parts)
