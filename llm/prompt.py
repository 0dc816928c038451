"""The narrator's prompt: fixed rules, one worked example, then the FACTS block.

Kept short because the default model is small (0.5B) and prompt evaluation
dominates on a 2-core CPU; the rules and the example come first and never
change, so llama.cpp reuses their cached prefix between incidents and only the
new FACTS block is evaluated.
"""

from __future__ import annotations

SYSTEM = """You write short incident summaries for on-call engineers.
Rules:
1. Use only the FACTS. Add no cause, advice, service or number that is not in the FACTS.
2. Copy every number exactly as written in the FACTS, with its unit. Never calculate, never compare with ratios like "4x", never round.
3. Name only services that appear in the FACTS.
4. Write one paragraph of 3 to 5 plain sentences: what happened and when; error rate and p95 latency before and during; the top error and the most affected endpoint; the likely root cause and related services; one sample trace id.
5. No headings, no lists, no markdown."""

EXAMPLE_FACTS = """service: checkout
status: resolved
severity: high
anomaly_types: error_surge, latency_spike
started_at: 2024-03-02 14:05 UTC
ended_at: 2024-03-02 14:17 UTC
duration_minutes: 12
request_rate_before: 512 requests/min
request_rate_during: 498 requests/min
error_rate_before: 0.8%
error_rate_during: 19.6%
p95_latency_before: 120 ms
p95_latency_during: 640 ms
p95_latency_peak: 910 ms
p99_latency_before: 210 ms
p99_latency_during: 1180 ms
top_errors: "upstream timeout calling inventory" (311 times); "connection reset by peer" (42 times)
affected_endpoints: /api/checkout (21.0% errors, p95 655 ms)
sample_trace_ids: 9a1f0c7e3b2d4e5f8a6b7c8d9e0f1a2b
root_cause_service: inventory
related_services: inventory
similar_past_incidents: 1 in the last 7 days (latest: checkout, error_surge, started 2024-03-01 09:40 UTC)"""

EXAMPLE_SUMMARY = (
    "checkout had a high-severity error surge and latency spike from 14:05 to 14:17 UTC on 2024-03-02 (12 minutes). "
    "The error rate rose from 0.8% to 19.6% and p95 latency from 120 ms to 640 ms, peaking at 910 ms. "
    'The top error was "upstream timeout calling inventory" (311 times), mostly on /api/checkout. '
    "The likely root cause is inventory; see trace 9a1f0c7e3b2d4e5f8a6b7c8d9e0f1a2b."
)

# Generation settings: greedy, short, one paragraph.
OPTIONS = {"temperature": 0, "seed": 0, "num_predict": 180, "stop": ["\n\n", "FACTS:", "<|im_end|>", "<|endoftext|>"]}


def build_messages(facts_block: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"FACTS:\n{EXAMPLE_FACTS}"},
        {"role": "assistant", "content": EXAMPLE_SUMMARY},
        {"role": "user", "content": f"FACTS:\n{facts_block}"},
    ]


def retry_messages(facts_block: str, rejected: str, problems: str) -> list[dict]:
    """A second try: show the model what it got wrong."""
    return build_messages(facts_block) + [
        {"role": "assistant", "content": rejected},
        {
            "role": "user",
            "content": f"That summary breaks the rules: {problems}. "
            "Write it again using only numbers, services and trace ids copied exactly from the FACTS.",
        },
    ]
