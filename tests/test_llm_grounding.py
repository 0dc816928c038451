"""The grounding check on crafted texts: what a summary may and may not state."""

import pytest

from llm.grounding import check, numbers_in
from llm.template import template_summary

KNOWN = {"checkout", "payments", "search", "inventory", "database"}
FACTS = {
    "incident_id": "3f1c2a4e-1111-4a2b-9c3d-123456789abc",
    "incident_updated_at": "2025-11-23 18:40:00",
    "service": "payments",
    "status": "resolved",
    "severity": "high",
    "anomaly_types": "error_surge",
    "time_range": "from 18:32 to 18:38 UTC on 2025-11-23 (6 minutes)",
    "request_rate": "about the same, 1234 requests/min before and 1190 requests/min during",
    "error_rate": "up, 0.98% before and 28.4% during",
    "p95_latency": "up, 80 ms before and 320 ms during (peak 410 ms)",
    "p99_latency": "up, 120 ms before and 655 ms during",
    "top_errors": '"connection pool exhausted" (78 times)',
    "affected_endpoints": "/api/v1/pay (27.3% errors, p95 310 ms)",
    "sample_trace_ids": "4bf92f3577b34da6a3ce929d0e0e4736",
    "root_cause_service": "database",
    "related_services": "checkout",
    "similar_past_incidents": "none in the last 7 days",
}


def violations(text):
    return check(text, FACTS, KNOWN).violations


@pytest.mark.parametrize(
    "text",
    [
        # copied verbatim
        "payments had a high-severity error surge from 18:32 to 18:38 UTC on 2025-11-23 (6 minutes). "
        "The error rate rose from 0.98% to 28.4% and p95 latency from 80 ms to 320 ms, peaking at 410 ms. "
        'The top error was "connection pool exhausted" (78 times) on /api/v1/pay. '
        "The likely root cause is database, with checkout affected; see trace 4bf92f3577b34da6a3ce929d0e0e4736.",
        # paraphrased: rounding, percentages as fractions, thousands separators, units glued on
        "Errors on payments climbed to about 28% (a 0.284 error rate, up from under 1%) while traffic held near 1,234 req/min; p95 hit 320ms.",
        "The error rate went from 0.0098 to 0.28, and p99 latency reached 655 ms.",
        "5xx responses surged on the payments service; p95 and p99 latency rose.",
        "The payment service was impacted; the database service is the likely root cause.",
        "The error rate went up from 0.98% to 28.4%, while traffic stayed about the same at 1190 requests/min.",
    ],
)
def test_grounded_paraphrases_pass(text):
    assert violations(text) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The error rate rose to 35% on payments.", "number 35%"),
        ("p95 latency rose from 80 ms to 330 ms.", "number 330"),
        ("Errors rose 4x compared to before.", "number 4"),  # a computed ratio is not a fact
        ("The error rate was 28.5%.", "number 28.5%"),  # more precise than the fact, and wrong
        ("The error rate reached 0.29.", "number 0.29"),  # 28.4% rounds to 0.28, not 0.29
        ("It lasted 9 minutes.", "number 9"),
        ("inventory also failed during the incident.", "service inventory"),  # known, but not in the facts
        ("The search tier saw errors.", "service search"),
        ("The billing-service timed out.", "service billing-service"),  # shaped like a service name
        ("The auth service returned errors.", "service auth"),  # invented, in prose
        ("See trace 9a1f0c7e3b2d4e5f8a6b7c8d9e0f1a2b.", "identifier 9a1f0c7e3b2d4e5f8a6b7c8d9e0f1a2b"),
        # right numbers, wrong direction (the facts say error rate up, traffic about the same)
        ("The error rate fell from 0.98% to 28.4%.", "it says error rate went down but the FACTS say up"),
        ("Traffic dropped to 1190 requests/min.", "it says request rate went down but the FACTS say about the same"),
        ("The error rate rose, while p95 latency stayed at 320 ms.", "it says p95 latency stayed about the same"),
        ("The error rate was up, 1234 requests/min before.", "it gives error rate in requests/min"),  # copied the wrong line
    ],
)
def test_invented_figures_and_services_fail(text, expected):
    found = violations(text)
    assert any(v.startswith(expected) for v in found), found


def test_empty_text_fails():
    assert violations("   ") == ["empty summary"]


def test_meta_keys_are_not_facts_the_text_may_use():
    # the incident's bookkeeping timestamp is stored with the facts but was never shown to the model
    assert violations("It was last updated at 18:40.") == ["number 40 is not in the facts"]


def test_numbers_glued_after_letters_are_names_not_figures():
    found = [n.text for n in numbers_in("p95 and p99 on /api/v1/pay rose to 320ms, 5xx up, 1,234.5 req")]
    assert found == ["320", "1,234.5"]


def test_template_summary_is_grounded_by_construction():
    text = template_summary(FACTS)
    assert check(text, FACTS, KNOWN).ok
    for value in ("28.4%", "320 ms", "database", "4bf92f3577b34da6a3ce929d0e0e4736"):
        assert value in text
