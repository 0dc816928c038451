"""`python -m llm.evaluate`: its seeded incidents, its ground-truth judge, and one real run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm import evaluate
from llm.facts import build_facts
from tests.llm_fixtures import TEST_MODEL, free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_plan_covers_every_type_with_cascades_and_open_incidents():
    plan = evaluate.scenarios(5)
    assert len(plan) == 30 and {s.kind for s in plan} == set(evaluate.TYPES)
    assert all(sum(s.kind == t for s in plan) == 5 for t in evaluate.TYPES)
    assert sum(s.cascade for s in plan) >= 3 and any(s.status == "open" for s in plan)
    by_service = {}
    for s in plan:  # one incident per service per slot: each has a clean 30-minute baseline
        by_service.setdefault(s.service, []).append(s.minutes_ago)
    assert all(len(set(v)) == len(v) for v in by_service.values())


def test_seeded_incidents_have_the_facts_of_their_scenario(store, settings):
    plan = evaluate.scenarios(1)
    evaluate.seed(store, settings.bronze_dir, plan)
    for s in plan:
        facts = build_facts(store, s.incident_id, settings.bronze_dir).lines
        assert facts["affected_service"] == s.service and facts["anomaly_types"] == s.kind
        assert facts["root_cause_service"] == s.root and facts["status"] == s.status
        if s.kind in evaluate.DIRECTION:
            assert facts["symptom"].split(", ")[0].endswith(evaluate.DIRECTION[s.kind]), (s.kind, facts["symptom"])
    assert evaluate.template_baseline(store, settings, plan)  # the template path passes the check on each


DROP = evaluate.Scenario("traffic_drop", "checkout", "checkout", [], 15, 5, "high", "resolved")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("checkout had a traffic_drop. Traffic was down, 500 requests/min before and 90 during.", []),
        (
            "checkout had an error_surge. Traffic was down.",
            ["anomaly_type: names error_surge, the scenario was traffic_drop"],
        ),
        (
            "checkout had a traffic_drop. Traffic went up.",
            ["direction: says the request rate went up, the scenario made it go down"],
        ),
        ("checkout had a traffic_drop. The error rate rose.", ["missing_symptom: never states the request rate"]),
        (
            "checkout had a traffic_drop; traffic fell. search was related.",
            ["service: names search, which the scenario did not involve"],
        ),
        # its callees are involved; a quoted error message and a sentence about a past incident are not claims about it
        (
            'checkout had a traffic_drop; traffic fell; it calls payments. Top error "database down". A similar past incident hit search.',
            [],
        ),
    ],
)
def test_the_ground_truth_judge(text, expected):
    assert evaluate.truth_failures(text, DROP, {"checkout", "search", "payments", "inventory", "database"}) == expected


@pytest.mark.e2e
@pytest.mark.serial  # failed once under two xdist workers (per-type lines missing); runs alone
def test_a_run_prints_per_type_figures(tmp_path):
    # SmolLM2-135M copies the worked examples: its summaries are refused and the template is stored,
    # so the run exits 1 (targets missed) and says so in its figures
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATA_DIR=str(tmp_path / "data"))
    env.pop("DUCKDB_PATH", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm.evaluate",
            "--model",
            TEST_MODEL,
            "--per-type",
            "1",
            "--types",
            "traffic_drop,error_surge",
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    assert "2 incidents (1 per type" in out, proc.stderr[-3000:]
    for kind in ("traffic_drop", "error_surge"):
        lines = [x for x in out.splitlines() if x.startswith(f"{kind} ")]
        assert lines, f"no {kind} line (exit {proc.returncode}):\n{out[-2000:]}\n{proc.stderr[-3000:]}"
        line = lines[0]
        assert "incidents=1 " in line and "claim_failures=" in line and "median_s=" in line and "faithful=" in line
    assert "template baseline (same run): median" in out and "load average" in out
    summary = next(x for x in out.splitlines() if x.startswith("llm_share="))
    llm_share = float(summary.split()[0].split("=")[1])
    assert proc.returncode == (0 if llm_share >= 0.8 and "UNFAITHFUL" not in out else 1)
