"""The narrator end to end: seeded DuckDB + bronze, `python -m llm.narrator --once`, the real
local model server with SmolLM2-135M, and the model server being down."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm import grounding, prompt
from llm.facts import build_facts, known_services
from llm.narration import Narrator, pending_incidents, summarise
from observability.store import utcnow
from tests.llm_fixtures import TEST_MODEL, free_port, llm_server, model_server, seed_scenario  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def run_narrator(data_dir, url, *args, timeout=240):
    env = dict(os.environ, DATA_DIR=str(data_dir), OLLAMA_URL=url, OLLAMA_MODEL=TEST_MODEL, PYTHONPATH=str(ROOT))
    env.pop("DUCKDB_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "llm.narrator", "--once", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
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
def test_once_stores_a_grounded_summary(store, settings, llm_server):  # noqa: F811
    incident = seed_scenario(store, settings.bronze_dir, "payments", related=["checkout"], root_cause="database")
    before = snapshot(store)

    proc = run_narrator(settings.data_dir, llm_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "narrated incidents=1" in proc.stdout and "pending=0" in proc.stdout

    (row,) = stored(store)
    assert row["incident_id"] == incident and row["service"] == "payments"
    facts = assert_grounded(row, known_services(store))
    assert facts["incident_id"] == incident
    assert row["model"] == TEST_MODEL and row["latency_ms"] > 0
    if row["generated_by"] == "llm":
        assert row["prompt_tokens"] > 100 and row["completion_tokens"] > 0
    assert snapshot(store) == before  # anomalies and incidents untouched
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith("backlog=0 ")

    # nothing pending: a second run writes nothing; a changed incident is pending again
    again = run_narrator(settings.data_dir, llm_server)
    assert again.returncode == 0 and "narrated incidents=0" in again.stdout
    assert len(stored(store)) == 1
    store.execute("UPDATE incidents SET updated_at = ? WHERE id = ?", [utcnow(), incident])
    assert pending_incidents(store) == [incident]


def test_facts_sheet_reads_metrics_bronze_endpoints_traces_and_history(store, settings):
    first = seed_scenario(store, settings.bronze_dir, "payments", related=["checkout"], root_cause="database")
    spike = seed_scenario(store, settings.bronze_dir, "search", minutes_ago=60, length=4, kind="latency_spike", metrics=False)
    again = seed_scenario(store, settings.bronze_dir, "payments", minutes_ago=8, length=3, metrics=False)
    facts = build_facts(store, first, settings.bronze_dir).lines
    assert facts["service"] == "payments" and facts["root_cause_service"] == "database"
    assert facts["related_services"] == "checkout" and facts["anomaly_types"] == "error_surge"
    assert "connection pool exhausted" in facts["top_errors"]  # from the bronze Parquet
    before, during = re.match(r"up, ([\d.]+)% before and ([\d.]+)% during$", facts["error_rate"]).groups()
    assert float(during) > 20 and float(before) < 3
    assert "/api/payments" in facts["affected_endpoints"]
    assert re.fullmatch(r"[0-9a-f]{32}", facts["sample_trace_ids"])  # one id: the summary cites one
    # worded as the summary says it (same-day form, or both dates when it crosses midnight)
    assert re.fullmatch(r"from (\d\d:\d\d to \d\d:\d\d UTC on \d{4}-\d\d-\d\d"
                        r"|\d{4}-\d\d-\d\d \d\d:\d\d UTC to \d{4}-\d\d-\d\d \d\d:\d\d UTC) \(\d+ minutes\)",
                        facts["time_range"]), facts["time_range"]
    assert facts["similar_past_incidents"] == "none in the last 7 days"  # the spike is older but unlike it
    latency = build_facts(store, spike, settings.bronze_dir).lines
    before, during = re.match(r"up, (\d+) ms before and (\d+) ms during \(peak \d+ ms\)$", latency["p95_latency"]).groups()
    assert int(during) > 3 * int(before)
    assert latency["top_errors"] == "none recorded"
    later = build_facts(store, again, settings.bronze_dir).lines
    assert later["similar_past_incidents"].startswith("1 in the last 7 days (latest: payments, error_surge")
    assert set(pending_incidents(store)) == {first, spike, again}


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
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith("backlog=1 model_server=down")

    with model_server(port, data_dir=tmp_path / "srv"):
        up = run_narrator(settings.data_dir, url)
    assert up.returncode == 0, up.stderr[-2000:]
    rows = stored(store)
    assert [r["incident_id"] for r in rows] == [incident]
    assert_grounded(rows[0], known_services(store))
    assert snapshot(store) == before
    assert store.fetch_one("SELECT detail FROM heartbeats WHERE component = 'narrator'")[0].startswith("backlog=0 model_server=ok")


class ScriptedLLM:
    """Stands in for a model that invents figures: a real model cannot be made to on demand."""

    model = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    def chat(self, messages):
        from llm.client import LLMReply

        self.calls.append(messages)
        return LLMReply(self.replies.pop(0), self.model, 5.0, 100, 20)


def test_ungrounded_text_is_retried_once_then_the_template_is_stored(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "payments", root_cause="database")
    facts = build_facts(store, incident, settings.bronze_dir)
    services = known_services(store)
    llm = ScriptedLLM(["Errors rose 7.5x on payments.", "The inventory service failed with 93% errors."])
    result = summarise(facts, llm, services)
    assert result.generated_by == "template" and len(llm.calls) == 2
    # the retry told the model what was wrong
    assert "number 7.5 is not in the facts" in llm.calls[1][-1]["content"]
    assert llm.calls[1][:3] == prompt.build_messages(facts.block())[:3]  # same rules and example
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
