"""The narrator's prompt: fixed rules, two worked examples, then the FACTS block.

The model answers in JSON constrained by a schema built for each incident
(Ollama's `format`, llama.cpp's grammar): one string per part of the summary,
in the facts' order (headline, symptom, top error, cause), and no top_error
field when the incident has no errors recorded, so the model cannot copy an
example's top error into it. The platform joins the fields into the summary;
the model writes every word of them. Measured with llm.evaluate against the
same prompt in prose (see the README).

The examples' services (cart, stock, billing, feed, web) are not the platform's: a
service copied from an example is then caught by the check as not in the facts,
instead of passing as a real service (incidents on search named the first
example's root cause when it was a platform service). The default model is
small (0.5B): it copies the shape of its examples, so the
two examples differ where incidents differ (an error surge with top errors and
callees; a traffic drop with none, whose symptom is traffic, not errors) and
both ignore their similar past incidents. The rules and the examples come
first and never change, so llama.cpp reuses their cached prefix between
incidents and only the new FACTS block is evaluated: the second example costs
prompt time once per model server, not per summary.
"""

from __future__ import annotations

import json

SYSTEM = """You write short incident summaries for on-call engineers.
Rules:
1. Use only the FACTS of this incident. Add no cause, advice, service or number that is not in the FACTS.
2. SIMILAR PAST INCIDENTS are other incidents: never use their services, anomaly types or numbers for this incident.
3. Copy every number exactly as written in the FACTS, with its unit. Never calculate, never use ratios like "4x", never round.
4. Name each service only in the role the FACTS give it (affected_service, root_cause_service, related_services). Say a metric was up, down or about the same only as the FACTS say.
5. Write 3 or 4 plain sentences in one paragraph: the affected_service, its anomaly_types and the time_range copied exactly; the symptom with its figures; the top error and the most affected endpoint, only if top_errors are recorded; the root_cause_service and one sample trace id.
6. No headings, no lists, no markdown."""

EXAMPLE_FACTS = """affected_service: cart
anomaly_types: error_surge
symptom: error rate up, 0.8% before and 19.6% during
time_range: from 14:05 to 14:17 UTC on 2024-03-02 (12 minutes)
severity: high
status: resolved
root_cause_service: stock
related_services: stock
error_rate: up, 0.8% before and 19.6% during
p95_latency: about the same, 120 ms before and 131 ms during (peak 152 ms)
p99_latency: about the same, 210 ms before and 236 ms during
request_rate: about the same, 512 requests/min before and 498 requests/min during
top_errors: "upstream timeout calling stock" (311 times); "connection reset by peer" (42 times)
affected_endpoints: /api/cart (21.0% errors, p95 133 ms)
callees: stock, billing
sample_trace_ids: 9a1f0c7e3b2d4e5f8a6b7c8d9e0f1a2b

SIMILAR PAST INCIDENTS (other, earlier incidents; not facts of this one):
- on 2024-02-27, lasted 6 minutes, same root cause"""

EXAMPLE_SUMMARY = (
    "cart had a high-severity error_surge from 14:05 to 14:17 UTC on 2024-03-02 (12 minutes). "
    "The error rate was up, 0.8% before and 19.6% during. "
    'The top error was "upstream timeout calling stock" (311 times), on /api/cart. '
    "The likely root cause is stock; see trace 9a1f0c7e3b2d4e5f8a6b7c8d9e0f1a2b."
)

EXAMPLE2_FACTS = """affected_service: feed
anomaly_types: traffic_drop
symptom: traffic down, 640 requests/min before and 96 requests/min during
time_range: from 08:40 to 08:49 UTC on 2024-03-05 (9 minutes)
severity: critical
status: resolved
root_cause_service: feed
related_services: none
request_rate: down, 640 requests/min before and 96 requests/min during
error_rate: about the same, 0.4% before and 0.5% during
p95_latency: about the same, 88 ms before and 90 ms during (peak 97 ms)
p99_latency: about the same, 140 ms before and 151 ms during
top_errors: none recorded
affected_endpoints: /api/feed (0.5% errors, p95 90 ms)
callers: web
sample_trace_ids: 0c4e8d2a7f1b4c3d9e6f5a4b3c2d1e0f

SIMILAR PAST INCIDENTS (other, earlier incidents; not facts of this one):
- on 2024-03-01, lasted 11 minutes, same service"""

EXAMPLE2_SUMMARY = (
    "feed had a critical-severity traffic_drop from 08:40 to 08:49 UTC on 2024-03-05 (9 minutes). "
    "Traffic was down, 640 requests/min before and 96 requests/min during. "
    "The likely root cause is feed; see trace 0c4e8d2a7f1b4c3d9e6f5a4b3c2d1e0f."
)

# Generation settings: greedy, short, one paragraph.
OPTIONS = {"temperature": 0, "seed": 0, "num_predict": 200, "stop": ["\n\n", "FACTS:", "<|im_end|>", "<|endoftext|>"]}


PARTS_WITH_ERRORS = ("headline", "symptom", "top_error", "cause")
PARTS = ("headline", "symptom", "cause")


def _facts_lines(facts_block: str) -> dict:
    return dict(line.split(": ", 1) for line in facts_block.split("\n\n")[0].splitlines() if ": " in line)


def parts_for(facts_block: str) -> tuple[str, ...]:
    errors = _facts_lines(facts_block).get("top_errors", "none recorded") != "none recorded"
    return PARTS_WITH_ERRORS if errors else PARTS


def schema(facts_block: str) -> dict:
    """The JSON schema the model's answer must match (sent as Ollama's `format`)."""
    parts = parts_for(facts_block)
    return {"type": "object", "properties": {p: {"type": "string"} for p in parts}, "required": list(parts)}


def as_json_answer(summary: str, parts: tuple[str, ...]) -> str:
    """A worked example's summary as the JSON answer the schema asks for (one sentence per part)."""
    from llm.grounding import sentences_of

    return json.dumps(dict(zip(parts, sentences_of(summary), strict=True)))


def joined(reply: str) -> str:
    """The summary from the model's JSON answer: its string fields joined in order. A reply that is
    not a JSON object (a server that ignored `format`) is returned as it is, for the check to judge."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return reply
    if not isinstance(answer, dict):
        return reply
    return " ".join(str(v).strip() for v in answer.values() if isinstance(v, str) and v.strip())


def focus(facts_block: str) -> str:
    """The incident's key roles restated right before the model writes: a small model copies
    the nearest example's sentences (a traffic drop's symptom into an error surge, the affected
    service as root cause), and what it read last weighs most."""
    lines = _facts_lines(facts_block)
    errors = "none recorded" if lines.get("top_errors", "none recorded") == "none recorded" else "recorded"
    symptom = lines.get("symptom", "")
    metric = symptom.split(" up,")[0].split(" down,")[0].split(" about the same,")[0] if symptom else "unknown"
    return (
        f"Summarise this incident: affected_service {lines.get('affected_service')}, anomaly_types {lines.get('anomaly_types')}, "
        f"symptom {metric}, root_cause_service {lines.get('root_cause_service')}, top_errors {errors}."
    )


def _user(facts_block: str) -> dict:
    return {"role": "user", "content": f"FACTS:\n{facts_block}\n\n{focus(facts_block)}"}


def build_messages(facts_block: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        _user(EXAMPLE2_FACTS),
        {"role": "assistant", "content": as_json_answer(EXAMPLE2_SUMMARY, PARTS)},
        _user(EXAMPLE_FACTS),
        {"role": "assistant", "content": as_json_answer(EXAMPLE_SUMMARY, PARTS_WITH_ERRORS)},
        _user(facts_block),
    ]


def retry_messages(facts_block: str, rejected: str, problems: str) -> list[dict]:
    """A second try: the same prompt, with what was wrong last time (a small model
    does better with a fresh prompt than with a critique of its own answer)."""
    messages = build_messages(facts_block)
    messages[-1] = {
        "role": "user",
        "content": f"FACTS:\n{facts_block}\n\n{focus(facts_block)} A previous summary of these FACTS was rejected: {problems}. "
        "Copy the anomaly_types, the symptom line, numbers, services in their roles, trace ids and the words "
        "up, down or about the same exactly from these FACTS.",
    }
    return messages
