"""`python -m llm.evaluate`: how faithful the narrator is, per anomaly type, on the default model.

Seeds a throwaway DuckDB + bronze with incidents of every anomaly type
(error_surge, latency_spike, latency_drift, traffic_drop, traffic_surge,
multivariate), single-service ones and cascades (the fault in a callee, seen in
its caller, with service dependencies recorded), shaped like the generator's
scenarios through the project's test fixtures (tests/seeding.py,
tests/llm_fixtures.py: a dev tool, run from a checkout). Earlier incidents get
summaries first, so later ones have similar past incidents to be tempted by.
Then it starts `python -m llm.serve` with the model and narrates each incident
exactly as the narrator does (facts, model, claim check, one retry, template).

Printed per type: LLM summaries, template fallbacks, claim failures by kind
(over every attempt, the refused ones included), median seconds per summary,
and `faithful=<share of LLM summaries with no failing claim>`. A stored LLM
summary passed the claim check against its facts by construction, so
`faithful` also re-judges each one against the scenario's ground truth (the
injected type, services and the symptom's direction), which the facts sheet
and the check could both get wrong. Baseline of the same run: the template path
(facts + template + check, no model). The machine's load is printed too.

    python -m llm.evaluate [--model qwen2.5-coder:0.5b] [--per-type 5] [--port 11509] [--url URL]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from llm import grounding
from llm.client import NarratorLLM
from llm.facts import SYMPTOM_METRIC, build_facts, known_services
from llm.summary_writer import store_summary, summarise
from llm.template import template_summary
from observability import bronze, tables
from observability.settings import Settings
from observability.store import Store, utcnow

TYPES = ("error_surge", "latency_spike", "latency_drift", "traffic_drop", "traffic_surge", "multivariate")
DIRECTION = {
    "error_surge": "up",
    "latency_spike": "up",
    "latency_drift": "up",
    "traffic_drop": "down",
    "traffic_surge": "up",
}
SERVICES = ("checkout", "payments", "search", "inventory", "database")
CALLS = {
    "checkout": ("inventory", "payments"),
    "inventory": ("database",),
    "payments": ("database",),
    "search": ("database",),
}
SLOT_MINUTES = 45  # one incident per service per slot, so each has a clean 30-minute baseline
MESSAGES = {  # what each service logs when it fails (the generator's wording)
    "checkout": "checkout overloaded, shedding load",
    "payments": "payment processor unavailable",
    "inventory": "inventory cache unavailable",
    "search": "search index shard failure",
    "database": "statement timeout",
}


@dataclass
class Scenario:
    kind: str
    service: str
    root: str
    related: list[str]
    minutes_ago: int
    length: int
    severity: str
    status: str
    incident_id: str = ""

    @property
    def cascade(self) -> bool:
        return self.root != self.service

    @property
    def services(self) -> set[str]:
        return {
            self.service,
            self.root,
            *self.related,
            *CALLS.get(self.service, ()),
            *(c for c, callees in CALLS.items() if self.service in callees),
        }


def scenarios(per_type: int, types: tuple[str, ...] = TYPES) -> list[Scenario]:
    """`per_type` incidents of each type; every other error surge and latency spike a cascade."""
    out, slots = [], Counter()
    for i in range(per_type):
        for t, kind in enumerate(TYPES):
            if kind not in types:
                continue
            service = SERVICES[(i + t) % len(SERVICES)]
            root, related = service, []
            if kind in ("error_surge", "latency_spike") and i % 2 and CALLS.get(service):
                root = CALLS[service][0]  # the fault is below, seen here
                related = [root]
            minutes_ago = 15 + SLOT_MINUTES * slots[service]
            # the latest incident of some services is still open (ongoing up to now)
            status = "open" if slots[service] == 0 and t % 2 else "resolved"
            slots[service] += 1
            out.append(
                Scenario(
                    kind,
                    service,
                    root,
                    related,
                    minutes_ago,
                    4 + (i + t) % 5,
                    ("medium", "high", "critical")[(i + t) % 3],
                    status,
                )
            )
    return out


def seed(store: Store, bronze_dir: Path, plan: list[Scenario]) -> None:
    from tests.llm_fixtures import apply_scenario, error_events
    from tests.seeding import seed_incident, seed_metrics

    now = utcnow().replace(second=0, microsecond=0)
    total = max(s.minutes_ago for s in plan) + 60
    seed_metrics(store, start=now - timedelta(minutes=total), minutes=total)
    deps = []
    for s in plan:
        started = now - timedelta(minutes=s.minutes_ago)
        apply_scenario(store, s.service, started, s.length, s.kind)
        if s.kind == "error_surge":
            messages = (
                [f"upstream timeout calling {s.root}", MESSAGES[s.root]]
                if s.cascade
                else [MESSAGES[s.service], "connection reset by peer"]
            )
            bronze.write_events(bronze_dir, error_events(s.service, started, s.length, messages=messages))
        for m in range(-1, s.length):  # the call graph Spark would record around the incident
            for caller, callees in CALLS.items():
                if s.service in (caller, *callees):
                    deps += [[started + timedelta(minutes=m), caller, c, 100, 0] for c in callees]
        if s.status == "open":
            s.length = s.minutes_ago  # ongoing: anomalies up to now
        s.incident_id = seed_incident(
            store,
            s.service,
            started,
            minutes=s.length,
            severity=s.severity,
            anomaly_type=s.kind,
            related=s.related,
            root_cause=s.root,
            status=s.status,
        )
        ranked = [{"service": s.root, "score": 0.82, "evidence": "errors seen here first"}]
        if s.cascade:  # the ranker's runner-up: the service that showed it
            ranked.append({"service": s.service, "score": 0.35, "evidence": "affected after the root"})
        store.execute(
            f"UPDATE {tables.INCIDENTS} SET root_cause_candidates = ? WHERE id = ?", [json.dumps(ranked), s.incident_id]
        )
    store.executemany(
        f"INSERT OR REPLACE INTO {tables.SERVICE_DEPENDENCIES} (window_start, parent_service, child_service, call_count, error_count) VALUES (?, ?, ?, ?, ?)",
        deps,
    )


# -- the ground truth: what the scenario was, independent of the facts sheet ----------------
def truth_failures(text: str, s: Scenario, known: set[str]) -> list[str]:
    """Claims of `text` that contradict the scenario (the injected type, services, direction)."""
    out = []
    plain = grounding._QUOTE.sub(lambda m: " " * len(m.group(0)), text)
    own = [x for x in grounding._SENTENCE_SPLIT.split(plain) if x.strip() and not grounding._PAST_INCIDENT.search(x)]
    for sentence in own:
        for kind, rx in grounding._TYPES.items():
            if kind != s.kind and rx.search(sentence):
                out.append(f"anomaly_type: names {kind}, the scenario was {s.kind}")
        for name in known - s.services:
            if grounding._word_in(name, sentence):
                out.append(f"service: names {name}, which the scenario did not involve")
    key = SYMPTOM_METRIC.get(s.kind)
    if key:
        metrics = grounding._SYMPTOM_METRICS[key]
        clauses = [c for x in own for _, c in grounding._clauses(grounding._blank_types(x))]
        said = [c for c in clauses if any(k in metrics for _, k in grounding._metric_mentions(c))]
        if not said:
            out.append(f"missing_symptom: never states the {key.replace('_', ' ')}")
        for c in said:
            for direction, rx in grounding._DIRECTIONS.items():
                for m in rx.finditer(c):
                    attached = grounding._attached_metric(
                        m.start(), [x for x in grounding._metric_mentions(c) if x[1] != "affected_endpoints"]
                    )
                    if attached in metrics and direction != DIRECTION[s.kind]:
                        out.append(
                            f"direction: says the {key.replace('_', ' ')} went {direction}, the scenario made it go {DIRECTION[s.kind]}"
                        )
    return sorted(set(out))


@dataclass
class Row:
    scenario: Scenario
    seconds: float
    generated_by: str
    first_try: bool
    failures: Counter = field(default_factory=Counter)  # claim failures by kind, all attempts
    truth: list[str] = field(default_factory=list)
    text: str = ""
    tokens: tuple[int, int] = (0, 0)  # prompt, completion (all attempts)


def narrate_all(llm, store: Store, settings: Settings, plan: list[Scenario], verbose: bool) -> list[Row]:
    services = known_services(store)
    rows = []
    for s in sorted(plan, key=lambda x: -x.minutes_ago):  # oldest first: later ones have a past
        t0 = time.perf_counter()
        facts = build_facts(store, s.incident_id, settings.bronze_dir)
        summary = summarise(facts, llm, services)
        store_summary(store, summary)
        row = Row(
            s,
            time.perf_counter() - t0,
            summary.generated_by,
            bool(summary.attempts) and not summary.attempts[0]["failures"],
            Counter(f["kind"] for a in summary.attempts for f in a["failures"]),
            text=summary.summary,
            tokens=(summary.prompt_tokens or 0, summary.completion_tokens or 0),
        )
        if summary.generated_by == "llm":
            row.truth = truth_failures(summary.summary, s, services)
            recheck = grounding.check(summary.summary, summary.facts, services)
            row.truth += [f"claim check: {v}" for v in recheck.violations]
        rows.append(row)
        repaired = any("dropped_sentence" in a for a in summary.attempts)
        tag = (
            "llm"
            if row.first_try
            else "llm (sentence dropped)"
            if repaired and row.generated_by == "llm"
            else "llm (retry)"
            if row.generated_by == "llm"
            else "template"
        )
        print(
            f"  {s.kind:<14} {s.service:<10} {'cascade ' if s.cascade else ''}{row.seconds:5.1f} s  {tag}"
            f"{'  UNFAITHFUL: ' + '; '.join(row.truth) if row.truth else ''}",
            flush=True,
        )
        if verbose:
            for a in summary.attempts:
                print(f"      {'refused' if a['failures'] else 'kept'}: {a['text']!r}", flush=True)
                if "dropped_sentence" in a:
                    print(f"      kept without: {a['dropped_sentence']!r}", flush=True)
                for f in a["failures"]:
                    print(f"        {f['kind']}: {f['reason']}", flush=True)
    return rows


def template_baseline(store: Store, settings: Settings, plan: list[Scenario]) -> list[float]:
    services = known_services(store)
    times = []
    for s in plan:
        t0 = time.perf_counter()
        facts = build_facts(store, s.incident_id, settings.bronze_dir)
        assert grounding.check(template_summary(facts.lines), facts.lines, services).ok
        times.append(time.perf_counter() - t0)
    return times


def report(rows: list[Row], baseline: list[float], model: str) -> bool:
    by_type: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_type[r.scenario.kind].append(r)

    def line(label: str, rs: list[Row]) -> str:
        llm_rows = [r for r in rs if r.generated_by == "llm"]
        failures = sum((r.failures for r in rs), Counter())
        kinds = ",".join(f"{k}:{n}" for k, n in sorted(failures.items())) or "none"
        faithful = f"{sum(not r.truth for r in llm_rows) / len(llm_rows):.2f}" if llm_rows else "n/a"
        return (
            f"{label:<14} incidents={len(rs)} llm={len(llm_rows)} template={len(rs) - len(llm_rows)} "
            f"first_try={sum(r.first_try for r in rs)} claim_failures={kinds} "
            f"median_s={statistics.median(r.seconds for r in rs):.1f} faithful={faithful}"
        )

    print(f"\nmodel {model}")
    for kind in TYPES:
        if by_type[kind]:
            print(line(kind, by_type[kind]))
    if any(r.scenario.cascade for r in rows):
        print(line("cascade", [r for r in rows if r.scenario.cascade]))
    print(line("all", rows))
    llm_share = sum(r.generated_by == "llm" for r in rows) / len(rows)
    secs = [r.seconds for r in rows]
    print(
        f"llm_share={llm_share:.2f} (target >= 0.80)  median_s={statistics.median(secs):.1f} (target <= 10)  "
        f"mean_s={statistics.mean(secs):.1f} max_s={max(secs):.1f}"
    )
    first = [r.tokens for r in rows if r.first_try]
    if first:
        print(
            f"tokens per first-try summary: prompt {statistics.median(t[0] for t in first):.0f}, "
            f"generated {statistics.median(t[1] for t in first):.0f} (medians)"
        )
    print(f"template baseline (same run): median {statistics.median(baseline) * 1000:.0f} ms per summary")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    faithful = all(not r.truth for r in rows if r.generated_by == "llm")
    return faithful and llm_share >= 0.8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=Settings().ollama_model)
    parser.add_argument("--per-type", type=int, default=5, help="incidents per anomaly type (6 types)")
    parser.add_argument("--port", type=int, default=11509, help="port for the model server this run starts")
    parser.add_argument("--url", help="use this running model server instead of starting one")
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated anomaly types to seed (default: all)")
    parser.add_argument("--verbose", action="store_true", help="print every attempt's text and failing claims")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model call otherwise
    try:
        from tests.llm_fixtures import model_server
    except ImportError:
        print(
            "python -m llm.evaluate seeds through tests/ fixtures: run it from a checkout of the repository",
            file=sys.stderr,
        )
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="llm_evaluate_"))
    try:
        settings = Settings(
            DATA_DIR=str(tmp / "data"),
            OLLAMA_URL=args.url or f"http://127.0.0.1:{args.port}",
            OLLAMA_MODEL=args.model,
            LLM_TIMEOUT_SECONDS=300,
        )
        store = Store.from_settings(settings)
        store.migrate()
        types = tuple(t for t in args.types.split(",") if t)
        if unknown := set(types) - set(TYPES):
            parser.error(f"unknown anomaly types: {', '.join(sorted(unknown))} (known: {', '.join(TYPES)})")
        plan = scenarios(args.per_type, types)
        seed(store, settings.bronze_dir, plan)
        baseline = template_baseline(store, settings, plan)
        print(
            f"{len(plan)} incidents ({args.per_type} per type, {sum(s.cascade for s in plan)} cascades), model {args.model}",
            flush=True,
        )
        llm = NarratorLLM.from_settings(settings, attempts=2)
        if args.url:
            rows = narrate_all(llm, store, settings, plan, args.verbose)
        else:
            from llm.model_files import ensure_model_file

            os.environ["LLM_MODEL_FILE"] = str(ensure_model_file(args.model, _models_dir()))
            with model_server(args.port, model=args.model, data_dir=tmp / "srv", log_path=tmp / "serve.log"):
                rows = narrate_all(llm, store, settings, plan, args.verbose)
        return 0 if report(rows, baseline, args.model) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _models_dir() -> Path:
    """Where `make setup` assembles the model files (the checkout's data/models, or DATA_DIR's)."""
    env = os.environ.get("DATA_DIR")
    return Path(env) / "models" if env else Path(__file__).resolve().parents[1] / "data" / "models"


if __name__ == "__main__":
    sys.exit(main())
