"""The narrator end to end: seeded DuckDB + bronze, `python -m llm.narrator --once`, the real
local model server (the default qwen2.5-coder:0.5b where the summary must come from the model,
SmolLM2-135M elsewhere), the model server refusing one incident, and being down."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llm import grounding, prompt
from llm.client import LLMRefused, LLMUnavailable, NarratorLLM
from llm.facts import TEMPLATE_REASON, build_facts, known_services
from llm.summary_writer import Narrator, pending_incidents, summarise
from observability import bronze
from observability.store import utcnow
from tests.llm_fixtures import DEFAULT_MODEL, TEST_MODEL, error_events, free_port, model_server, seed_scenario

ROOT = Path(__file__).resolve().parents[1]


def run_narrator(data_dir, url, *args, model=TEST_MODEL, timeout=240):
    env = dict(os.environ, DATA_DIR=str(data_dir), OLLAMA_URL=url, OLLAMA_MODEL=model, PYTHONPATH=str(ROOT))
    env.pop("DUCKDB_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "llm.narrator", "--once", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stored(store):
    df = store.fetch_df("SELECT * FROM incident_summaries ORDER BY created_at")
    return df.to_dict("records")


def snapshot(store):
    """Everything the detector owns, to prove the narrator never touches it."""
    return (
        store.fetch_all("SELECT * FROM anomalies ORDER BY id"),
        store.fetch_all("SELECT * FROM incidents ORDER BY id"),
    )


def assert_grounded(row, services):
    facts = json.loads(row["facts"])
    assert row["generated_by"] in ("llm", "template")
    result = grounding.check(row["summary"], facts, services)
    assert result.ok, (row["summary"], result.violations)
    return facts


@pytest.mark.e2e
def test_once_stores_a_grounded_summary_written_by_the_model(store, settings, default_llm_server):
    # the platform's default model: SmolLM2-135M copies the worked example's date and trace id,
    # which the grounding check rightly rejects, so with it every summary would be the template
    incident = seed_scenario(store, settings.bronze_dir, "payments", related=["checkout"], root_cause="database")
    before = snapshot(store)

    proc = run_narrator(settings.data_dir, default_llm_server, model=DEFAULT_MODEL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "narrated incidents=1 llm=1 template=0 pending=0" in proc.stdout

    (row,) = stored(store)
    assert row["incident_id"] == incident and row["service"] == "payments"
    assert row["generated_by"] == "llm", row["summary"]
    facts = assert_grounded(row, known_services(store))
    assert facts["incident_id"] == incident and TEMPLATE_REASON not in facts
    assert row["summary"] != facts_template(facts)
    assert row["model"] == DEFAULT_MODEL and row["latency_ms"] > 0
    assert row["prompt_tokens"] > 100 and row["completion_tokens"] > 0
    assert snapshot(store) == before  # anomalies and incidents untouched
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith("backlog=0 ")

    # nothing pending: a second run writes nothing; a changed incident is pending again
    again = run_narrator(settings.data_dir, default_llm_server, model=DEFAULT_MODEL)
    assert again.returncode == 0 and "narrated incidents=0" in again.stdout
    assert len(stored(store)) == 1
    store.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", [utcnow(), incident])
    assert pending_incidents(store) == [incident]


def test_facts_sheet_reads_metrics_bronze_endpoints_traces_and_history(store, settings):
    first = seed_scenario(store, settings.bronze_dir, "payments", related=["checkout"], root_cause="database")
    spike = seed_scenario(
        store, settings.bronze_dir, "search", minutes_ago=60, length=4, kind="latency_spike", metrics=False
    )
    again = seed_scenario(store, settings.bronze_dir, "payments", minutes_ago=8, length=3, metrics=False)
    facts = build_facts(store, first, settings.bronze_dir).lines
    assert facts["affected_service"] == "payments" and facts["root_cause_service"] == "database"
    assert facts["related_services"] == "checkout" and facts["anomaly_types"] == "error_surge"
    assert "connection pool exhausted" in facts["top_errors"]  # from the bronze Parquet
    before, during = re.match(r"up, ([\d.]+)% before and ([\d.]+)% during$", facts["error_rate"]).groups()
    assert float(during) > 20 and float(before) < 3
    assert "/api/payments" in facts["affected_endpoints"]
    assert re.fullmatch(r"[0-9a-f]{32}", facts["sample_trace_ids"])  # one id: the summary cites one
    # worded as the summary says it (same-day form, or both dates when it crosses midnight)
    assert re.fullmatch(
        r"from (\d\d:\d\d to \d\d:\d\d UTC on \d{4}-\d\d-\d\d"
        r"|\d{4}-\d\d-\d\d \d\d:\d\d UTC to \d{4}-\d\d-\d\d \d\d:\d\d UTC) \(\d+ minutes\)",
        facts["time_range"],
    ), facts["time_range"]
    assert facts["similar_past_incidents"] == []  # the spike is older but unlike it
    # ordered by importance, the defining symptom first, labelled by role
    assert list(facts)[:4] == ["affected_service", "anomaly_types", "symptom", "time_range"]
    assert facts["symptom"] == "error rate " + facts["error_rate"]
    assert list(facts).index("error_rate") < list(facts).index("p95_latency")
    latency = build_facts(store, spike, settings.bronze_dir).lines
    before, during = re.match(
        r"up, (\d+) ms before and (\d+) ms during \(peak \d+ ms\)$", latency["p95_latency"]
    ).groups()
    assert int(during) > 3 * int(before)
    assert latency["top_errors"] == "none recorded"
    assert latency["symptom"] == "p95 latency " + latency["p95_latency"]
    assert list(latency).index("p95_latency") < list(latency).index("error_rate")
    later = build_facts(store, again, settings.bronze_dir)
    (similar,) = later.lines["similar_past_incidents"]  # the earlier payments error surge, not the spike
    day = re.search(r"\d{4}-\d\d-\d\d", facts["time_range"]).group(0)
    # when, how long and what it shares: not the other incident's services or root cause
    assert re.fullmatch(rf"on {day}, lasted 6 minutes, same service and anomaly type", similar), similar
    assert "SIMILAR PAST INCIDENTS (other, earlier incidents; not facts of this one):\n- on " in later.block()
    assert set(pending_incidents(store)) == {first, spike, again}
    assert "root_cause_candidates" not in facts  # none ranked: no line


def test_root_cause_candidates_join_the_facts_under_their_own_label(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "checkout", related=["payments"], root_cause="database")
    ranked = [
        {"service": s, "score": sc, "evidence": "errors seen here first"}
        for s, sc in [("database", 0.8123), ("payments", 0.4), ("checkout", 0.2), ("search", 0.1)]
    ]
    store.execute("UPDATE incidents SET root_cause_candidates = ? WHERE id = ?", [json.dumps(ranked), incident])
    facts = build_facts(store, incident, settings.bronze_dir)
    assert facts.lines["root_cause_candidates"] == "database (score 0.81), payments (score 0.40), checkout (score 0.20)"
    assert "search" not in facts.services  # the fourth is not offered
    symptom = f"The error rate was {facts.lines['error_rate']}."
    text = f"checkout had an error_surge. {symptom} The root cause candidates were database and payments."
    assert grounding.check(text, facts.lines, known_services(store)).ok
    wrong = f"checkout had an error_surge. {symptom} The root cause candidates were database and inventory."
    assert grounding.check(wrong, facts.lines, known_services(store)).by_kind() == {"service": 1}
    store.execute(
        "UPDATE incidents SET root_cause_candidates = '[1, 2]' WHERE id = ?", [incident]
    )  # not the ranker's shape
    assert "root_cause_candidates" not in build_facts(store, incident, settings.bronze_dir).lines


@pytest.mark.e2e
def test_model_server_down_leaves_the_backlog_then_catches_up(store, settings, tmp_path):
    incident = seed_scenario(store, settings.bronze_dir, "checkout", related=["payments"], root_cause="payments")
    before = snapshot(store)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    down = run_narrator(settings.data_dir, url)
    assert down.returncode == 2, down.stderr[-2000:]
    assert "pending=1" in down.stdout and "model_server=down" in down.stdout
    assert stored(store) == [] and snapshot(store) == before
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith(
        "backlog=1 model_server=down"
    )

    with model_server(port, data_dir=tmp_path / "srv"):
        up = run_narrator(settings.data_dir, url)
    assert up.returncode == 0, up.stderr[-2000:]
    rows = stored(store)
    assert [r["incident_id"] for r in rows] == [incident]
    assert_grounded(rows[0], known_services(store))
    assert snapshot(store) == before
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith(
        "backlog=0 model_server=ok"
    )


def facts_template(facts):
    from llm.template import template_summary

    return template_summary(facts)


def seed_huge_error(store, bronze_dir, incident_id, service, chars=40_000):
    """The incident's most frequent error is a 40,000-character message (a dumped stack trace):
    its facts alone exceed the server's MODEL_SERVER_MAX_PROMPT_CHARS (32,768)."""
    (started,) = store.fetch_one("SELECT started_at FROM incidents WHERE id = ?", [incident_id])
    events = error_events(service, started, minutes=5)
    events["error_message"] = ("at pool.acquire(pool.py:42) " * (chars // 28 + 1))[:chars]
    bronze.write_events(bronze_dir, events)


@pytest.mark.e2e
def test_a_refused_incident_gets_the_template_and_the_next_ones_are_narrated(store, settings, llm_server):
    refused = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    seed_huge_error(store, settings.bronze_dir, refused, "payments")
    later = seed_scenario(
        store, settings.bronze_dir, "search", minutes_ago=60, length=4, kind="latency_spike", metrics=False
    )
    store.execute("UPDATE incidents SET updated_at = updated_at - INTERVAL 1 HOUR WHERE id = ?", [refused])
    assert pending_incidents(store) == [refused, later]  # the refused one comes first

    proc = run_narrator(settings.data_dir, llm_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "narrated incidents=2" in proc.stdout and "pending=0 model_server=ok" in proc.stdout
    rows = {r["incident_id"]: r for r in stored(store)}
    assert set(rows) == {refused, later}
    refused_facts = assert_grounded(rows[refused], known_services(store))
    assert rows[refused]["generated_by"] == "template"
    assert rows[refused]["summary"] == facts_template(refused_facts)
    reason = refused_facts[TEMPLATE_REASON]
    assert "refused the request (413)" in reason and "MODEL_SERVER_MAX_PROMPT_CHARS" in reason
    later_facts = assert_grounded(rows[later], known_services(store))
    assert "refused" not in later_facts.get(TEMPLATE_REASON, "")
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith(
        "backlog=0 model_server=ok"
    )


def test_a_model_the_server_does_not_serve_is_unavailable_not_a_refusal(store, settings, llm_server):
    # a 404 says nothing about the incident: every incident stays pending, the narrator backs off
    seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    proc = run_narrator(settings.data_dir, llm_server, model="qwen2.5-coder:1.5b")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "narrated incidents=0" in proc.stdout and "pending=1 model_server=down" in proc.stdout
    assert stored(store) == []


def counted(llm: NarratorLLM) -> list[httpx.Request]:
    """The HTTP requests the narrator's client really sends (a hook on its httpx client)."""
    sent: list[httpx.Request] = []
    llm.client._client.event_hooks["request"].append(sent.append)
    return sent


def test_the_client_does_not_retry_a_refusal(llm_server):
    llm = NarratorLLM(llm_server, TEST_MODEL, timeout=60, attempts=3)
    sent = counted(llm)
    with pytest.raises(LLMRefused) as err:
        llm.chat([{"role": "user", "content": "word " * 8000}])  # over MODEL_SERVER_MAX_PROMPT_CHARS
    assert err.value.status_code == 413 and len(sent) == 1

    unknown = NarratorLLM(llm_server, "qwen2.5-coder:1.5b", timeout=60, attempts=3)
    sent = counted(unknown)
    with pytest.raises(LLMUnavailable, match="does not serve"):
        unknown.chat([{"role": "user", "content": "hi"}])
    assert len(sent) == 1


def test_the_client_retries_an_unreachable_server():
    llm = NarratorLLM(f"http://127.0.0.1:{free_port()}", TEST_MODEL, timeout=5, attempts=2, backoff_max=1)
    sent = counted(llm)
    with pytest.raises(LLMUnavailable, match="after 2 attempts"):
        llm.chat([{"role": "user", "content": "hi"}])
    assert len(sent) == 2


class ScriptedLLM:
    """Stands in for a model that invents figures: a real model cannot be made to on demand."""

    model = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []
        self.formats = []

    def chat(self, messages, format=None):  # noqa: A002
        from llm.client import LLMReply

        self.calls.append(messages)
        self.formats.append(format)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return LLMReply(reply, self.model, 5.0, 100, 20)


def test_ungrounded_text_is_retried_once_then_the_template_is_stored(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    facts = build_facts(store, incident, settings.bronze_dir)
    services = known_services(store)
    llm = ScriptedLLM(["Errors rose 7.5x on payments.", "The inventory service failed with 93% errors."])
    result = summarise(facts, llm, services)
    assert result.generated_by == "template" and len(llm.calls) == 2
    # the retry told the model what was wrong
    assert "number 7.5 is not in the FACTS" in llm.calls[1][-1]["content"]
    assert llm.calls[1][:-1] == prompt.build_messages(facts.block())[:-1]  # same rules and examples
    assert facts.block() in llm.calls[1][-1]["content"]
    assert grounding.check(result.summary, result.facts, services).ok
    assert result.latency_ms == 10.0 and result.prompt_tokens == 200

    Narrator(settings, store=store, llm=ScriptedLLM(["Errors rose 7.5x.", "Still 7.5x."])).cycle()
    (row,) = stored(store)
    assert row["generated_by"] == "template" and row["summary"] == result.summary


def test_a_grounded_retry_is_stored_as_llm(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    facts = build_facts(store, incident, settings.bronze_dir)
    during = facts.lines["error_rate"].split(" and ")[1].split()[0]
    good = f"payments saw errors rise to {during}; the likely root cause is database."
    result = summarise(facts, ScriptedLLM(["payments errors rose 987.6x.", good]), known_services(store))
    assert result.generated_by == "llm" and result.summary == good


def test_a_text_wrong_in_one_sentence_is_kept_without_it(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    facts = build_facts(store, incident, settings.bronze_dir)
    headline = f"payments had a high-severity error_surge {facts.lines['time_range']}."
    symptom = f"The error rate was {facts.lines['error_rate']}."
    invented = 'The top error was "disk full" (311 times).'  # copied from nowhere: a quote and a figure
    cause = "The likely root cause is database."
    llm = ScriptedLLM([" ".join([headline, symptom, invented, cause])])
    result = summarise(facts, llm, known_services(store))
    assert result.generated_by == "llm" and len(llm.calls) == 1  # no retry needed
    assert result.summary == " ".join([headline, symptom, cause])
    assert grounding.check(result.summary, result.facts, known_services(store)).ok
    (rejected,) = result.facts["rejected_summaries"]
    assert rejected["dropped_sentence"] == invented
    assert {f["kind"] for f in result.facts["claim_failures"]} == {"quote", "figure"}

    # the headline is never dropped, nor a sentence the symptom depends on: those are retried
    wrong_headline = f"payments had a latency_spike {facts.lines['time_range']}."
    llm = ScriptedLLM([" ".join([wrong_headline, symptom, cause]), " ".join([headline, symptom, cause])])
    assert (
        summarise(facts, llm, known_services(store)).summary == " ".join([headline, symptom, cause])
        and len(llm.calls) == 2
    )
    llm = ScriptedLLM([" ".join([headline, "The error rate was down.", cause])] * 2)
    assert summarise(facts, llm, known_services(store)).generated_by == "template"


def test_a_retry_the_server_refuses_stores_the_template_with_the_reason(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    facts = build_facts(store, incident, settings.bronze_dir)
    llm = ScriptedLLM(["Errors rose 7.5x on payments.", LLMRefused("refused the request (413): prompt too long", 413)])
    result = summarise(facts, llm, known_services(store))
    assert result.generated_by == "template" and len(llm.calls) == 2 and len(result.attempts) == 1
    assert (
        result.facts[TEMPLATE_REASON]
        == "the model server refused the request: refused the request (413): prompt too long"
    )
    grounded = summarise(facts, ScriptedLLM(["Errors rose 7.5x.", "Still 7.5x."]), known_services(store))
    assert grounded.facts[TEMPLATE_REASON] == "failed the grounding check twice (figure, missing_symptom)"
    # a reviewer reads which claims failed, in which attempt, and the refused texts
    assert grounded.facts["rejected_summaries"] == [
        {"attempt": 1, "text": "Errors rose 7.5x."},
        {"attempt": 2, "text": "Still 7.5x."},
    ]
    assert {
        "attempt": 1,
        "kind": "figure",
        "claim": "7.5",
        "reason": "number 7.5 is not in the FACTS",
    } in grounded.facts["claim_failures"]


def test_the_model_answers_in_a_schema_of_the_facts_parts_and_the_platform_joins_them(store, settings):
    with_errors = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    without = seed_scenario(
        store, settings.bronze_dir, "search", minutes_ago=60, length=4, kind="latency_spike", metrics=False
    )
    services = known_services(store)
    facts = build_facts(store, with_errors, settings.bronze_dir)
    headline = f"payments had a high-severity error_surge {facts.lines['time_range']}."
    symptom = f"The error rate was {facts.lines['error_rate']}."
    answer = json.dumps(
        {"headline": headline, "symptom": symptom, "top_error": "", "cause": "The likely root cause is database."}
    )
    llm = ScriptedLLM([answer])
    result = summarise(facts, llm, services)
    assert result.generated_by == "llm" and result.summary == f"{headline} {symptom} The likely root cause is database."
    assert llm.formats[0]["required"] == ["headline", "symptom", "top_error", "cause"]
    # no errors recorded: no top_error field, so the model cannot copy the example's
    llm = ScriptedLLM(["not json at all: 7.5x"] * 2)
    summarise(build_facts(store, without, settings.bronze_dir), llm, services)
    assert llm.formats[0]["required"] == ["headline", "symptom", "cause"]
    assert prompt.joined("not json at all") == "not json at all" and prompt.joined("[1, 2]") == "[1, 2]"
    # the worked examples, as the JSON answers the model sees, are the example summaries
    messages = prompt.build_messages(facts.block())
    assert prompt.joined(messages[2]["content"]) == prompt.EXAMPLE2_SUMMARY
    assert prompt.joined(messages[4]["content"]) == prompt.EXAMPLE_SUMMARY
