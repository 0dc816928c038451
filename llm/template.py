"""The deterministic summary, built from the facts alone (the fallback).

Every sentence only places fact values, so it passes the grounding check by
construction (a test re-checks it); used when the model's text failed the
check twice.
"""

from __future__ import annotations


def template_summary(facts: dict) -> str:
    f = facts
    parts = [
        f"{f['service']} had a {f['severity']}-severity incident ({f['anomaly_types']}, {f['status']}) {f['time_range']}.",
        f"Error rate: {f['error_rate']}.",
        f"p95 latency: {f['p95_latency']}; p99 latency: {f['p99_latency']}.",
        f"Traffic: {f['request_rate']}.",
        f"Top errors: {f['top_errors']}.",
        f"Most affected endpoints: {f['affected_endpoints']}.",
        f"Likely root cause: {f['root_cause_service']}; related services: {f['related_services']}.",
        f"Sample traces: {f['sample_trace_ids']}.",
        f"Similar past incidents: {f['similar_past_incidents']}.",
    ]
    return " ".join(parts)
