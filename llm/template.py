"""The deterministic summary, built from the facts alone (the fallback).

Every sentence only places fact values, so it passes the grounding check by
construction (a test re-checks it); used when the model's text failed the
check twice.
"""

from __future__ import annotations


def template_summary(facts: dict) -> str:
    f = facts
    when = f"from {f['started_at']} to {f['ended_at']}" if f["ended_at"] != "ongoing" else f"since {f['started_at']} (ongoing)"
    parts = [
        f"{f['service']} had a {f['severity']}-severity incident ({f['anomaly_types']}) {when}, lasting {f['duration_minutes']} min.",
        f"Error rate went from {f['error_rate_before']} before to {f['error_rate_during']} during; "
        f"p95 latency from {f['p95_latency_before']} to {f['p95_latency_during']} (peak {f['p95_latency_peak']}), "
        f"p99 latency from {f['p99_latency_before']} to {f['p99_latency_during']}.",
        f"Traffic: {f['request_rate_before']} before, {f['request_rate_during']} during.",
        f"Top errors: {f['top_errors']}.",
        f"Most affected endpoints: {f['affected_endpoints']}.",
        f"Likely root cause: {f['root_cause_service']}; related services: {f['related_services']}.",
        f"Sample traces: {f['sample_trace_ids']}.",
        f"Similar past incidents: {f['similar_past_incidents']}.",
    ]
    return " ".join(parts)
