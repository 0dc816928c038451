"""`python -m anomaly_detection.evaluate scenarios|nab ...`: detection quality figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomaly_detection import nab_eval, scenario_eval


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.evaluate", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scenarios", help="generator scenarios through the pipeline: precision, recall, F1, delay, false alerts")
    s.add_argument("--workdir", type=Path, default=Path("data/eval_scenarios"), help="scratch DATA_DIRs (recreated)")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--aggregator", choices=("spark", "duckdb"), default="spark", help="spark = the real job; duckdb = a GROUP BY stand-in")
    s.add_argument("--clean-hours", type=float, default=24.0, help="hours of clean traffic for the false-alert rate")
    s.add_argument("--warmup-minutes", type=int, default=180)
    s.add_argument("--spacing-minutes", type=int, default=45)
    s.add_argument("--scenario", action="append", default=None, metavar="TYPE:SERVICE", help="repeatable; default: a mix of every type")
    n = sub.add_parser("nab", help="Numenta Anomaly Benchmark with NAB's scoring")
    n.add_argument("--data", type=Path, default=Path("../shared/datasets/nab"))
    n.add_argument("--out", type=Path, default=Path("data/nab_results"))
    args = p.parse_args(argv)
    if args.cmd == "scenarios":
        result = scenario_eval.run(
            args.workdir, seed=args.seed, aggregator=args.aggregator, clean_hours=args.clean_hours,
            warmup_min=args.warmup_minutes, spacing_min=args.spacing_minutes,
            scenarios=tuple(args.scenario) if args.scenario else scenario_eval.DEFAULT_SCENARIOS,
        )
        print(scenario_eval.report(result))
        return 0
    results = nab_eval.run(args.data, args.out, progress=sys.stderr.isatty())
    print(nab_eval.report(results))
    print(f"result files: {args.out / nab_eval.DETECTOR_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
