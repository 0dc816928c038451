"""LLM narrator figures: seconds per incident summary and the grounding pass rate.

Seeds a throwaway DuckDB with incidents shaped like the generator's scenarios
(error_surge, latency_spike, traffic_drop, latency_drift, cascade), starts
`python -m llm.serve` with the chosen model (default: OLLAMA_MODEL's default,
qwen2.5-coder:0.5b), and summarises each incident exactly as the narrator
does. Baseline measured in the same run: the template path (facts + template
+ grounding check, no model).

    .venv/bin/python bench/bench_llm.py [--model qwen2.5-coder:0.5b] [--rounds 2] [--port 11510]

Goals: <= 10 s per summary on this CPU; >= 80% of summaries grounded LLM text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from goals import goal_line  # noqa: E402  (bench/ is on sys.path when run as a script)

from llm.client import NarratorLLM  # noqa: E402
from llm.facts import build_facts, known_services  # noqa: E402
from llm.grounding import check  # noqa: E402
from llm.model_files import ensure_model_file  # noqa: E402
from llm.summary_writer import store_summary, summarise  # noqa: E402
from llm.template import template_summary  # noqa: E402
from observability.settings import Settings  # noqa: E402
from observability.store import Store  # noqa: E402
from tests.llm_fixtures import model_server, seed_scenario  # noqa: E402

# (service, kind, minutes_ago, length, related, root cause)
SCENARIOS = [
    ("payments", "error_surge", 30, 6, ["checkout"], "payments"),
    ("search", "latency_spike", 50, 4, [], "search"),
    ("checkout", "traffic_drop", 70, 5, [], "checkout"),
    ("inventory", "latency_drift", 95, 8, ["checkout"], "inventory"),
    ("checkout", "error_surge", 15, 5, ["payments", "inventory"], "database"),  # cascade: fault below, seen above
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=Settings().ollama_model)
    parser.add_argument("--rounds", type=int, default=2, help="seeded datasets (different numbers), 5 incidents each")
    parser.add_argument("--port", type=int, default=11510)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_llm_"))
    data = tmp / "data"
    os.environ["DATA_DIR"] = str(data)
    settings = Settings(
        DATA_DIR=str(data), OLLAMA_URL=f"http://127.0.0.1:{args.port}", OLLAMA_MODEL=args.model, LLM_TIMEOUT_SECONDS=300
    )
    models_dir = Path(os.environ.get("BENCH_MODELS_DIR", ROOT / "data" / "models"))
    model_file = ensure_model_file(args.model, models_dir)  # assembled once, reused
    os.environ["LLM_MODEL_FILE"] = str(model_file)

    stores = []
    for r in range(args.rounds):
        s = Settings(DATA_DIR=str(data / f"round{r}"))
        store = Store.from_settings(s)
        store.migrate()
        for i, (service, kind, ago, length, related, root) in enumerate(SCENARIOS):
            seed_scenario(
                store,
                s.bronze_dir,
                service,
                minutes_ago=ago + r,
                length=length,
                kind=kind,
                metrics=(i == 0),
                related=related,
                root_cause=root,
                severity=["high", "critical", "medium"][i % 3],
            )
        stores.append((s, store))

    # baseline: the template path
    t_times = []
    for s, store in stores:
        services = known_services(store)
        for (iid,) in store.fetch_all("SELECT id FROM incidents ORDER BY started_at"):
            t0 = time.perf_counter()
            facts = build_facts(store, iid, s.bronze_dir)
            text = template_summary(facts.lines)
            assert check(text, facts.lines, services).ok
            t_times.append(time.perf_counter() - t0)

    rows = []
    print(
        f"model {args.model} ({model_file.name}), threads {settings.llm_threads}, {len(t_times)} incidents", flush=True
    )
    with model_server(args.port, model=args.model, data_dir=data / "srv", log_path=tmp / "serve.log"):
        llm = NarratorLLM.from_settings(settings, attempts=2)
        for s, store in stores:
            services = known_services(store)
            for (iid,) in store.fetch_all("SELECT id FROM incidents ORDER BY started_at"):
                t0 = time.perf_counter()
                facts = build_facts(store, iid, s.bronze_dir)
                summary = summarise(facts, llm, services)
                store_summary(store, summary)
                elapsed = time.perf_counter() - t0
                first_ok = not summary.attempts[0]["violations"]
                rows.append((elapsed, summary, first_ok))
                status = (
                    "llm (first try)"
                    if first_ok
                    else ("llm (after retry)" if summary.generated_by == "llm" else "template")
                )
                print(
                    f"  {facts.service:<10} {facts.lines['anomaly_types']:<14} {elapsed:6.1f} s  {status}", flush=True
                )
                for a in summary.attempts:
                    if a["violations"]:
                        print(f"      rejected: {a['violations']}: {a['text']!r}", flush=True)
    n = len(rows)
    secs = [r[0] for r in rows]
    llm_share = sum(r[1].generated_by == "llm" for r in rows) / n
    first_share = sum(r[2] for r in rows) / n
    template_ms = statistics.mean(t_times) * 1000
    print()
    print(
        f"seconds per summary: mean {statistics.mean(secs):.1f}, median {statistics.median(secs):.1f}, "
        f"first (cold prompt cache) {secs[0]:.1f}, max {max(secs):.1f}  (goal <= 10 s)"
    )
    print(
        f"grounded LLM summaries: {llm_share:.0%} ({first_share:.0%} on the first try; the rest used the template)  (goal >= 80%)"
    )
    print(
        f"template baseline: {template_ms:.0f} ms per summary; LLM path is {statistics.mean(secs) * 1000 / template_ms:.0f}x slower"
    )
    load_now = os.getloadavg()[0]
    goal_line(
        f"incident summary, {args.model}, median of {n}",
        f"{statistics.median(secs):.1f} s (mean {statistics.mean(secs):.1f}, cold first {secs[0]:.1f}; load {load_now:.1f})",
        "<= 10 s",
        f"template {template_ms:.0f} ms",
        statistics.median(secs) <= 10,
    )
    goal_line(
        "LLM summaries passing the grounding check",
        f"{llm_share:.0%} ({sum(r[1].generated_by == 'llm' for r in rows)}/{n}; {first_share:.0%} first try)",
        ">= 80%",
        f"template, {len(t_times)}/{len(t_times)} grounded (checked above)",
        llm_share >= 0.8,
    )
    example = next((r[1] for r in rows if r[1].generated_by == "llm"), rows[0][1])
    print(f"\nexample ({example.generated_by}): {example.summary}")
    print(f"(1-min load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
