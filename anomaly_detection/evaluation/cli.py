"""The evaluation command line (`python -m anomaly_detection.evaluate`, whose module only calls `main`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomaly_detection.evaluation import nab, scenarios

DESCRIPTION = (
    "`python -m anomaly_detection.evaluate scenarios|nab|rca|forecast ...`: detection, root-cause and forecast "
    "quality figures."
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.evaluate", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser(
        "scenarios", help="generator scenarios through the pipeline: precision, recall, F1, delay, false alerts"
    )
    s.add_argument("--workdir", type=Path, default=Path("data/eval_scenarios"), help="scratch DATA_DIRs (recreated)")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument(
        "--aggregator",
        choices=("spark", "duckdb"),
        default="spark",
        help="spark = the real job; duckdb = a GROUP BY stand-in",
    )
    s.add_argument("--clean-hours", type=float, default=24.0, help="hours of clean traffic for the false-alert rate")
    s.add_argument("--warmup-minutes", type=int, default=180)
    s.add_argument("--spacing-minutes", type=int, default=45)
    s.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="TYPE:SERVICE",
        help="repeatable; default: a mix of every type",
    )
    n = sub.add_parser("nab", help="Numenta Anomaly Benchmark with NAB's scoring")
    n.add_argument("--data", type=Path, default=Path("../shared/datasets/nab"))
    n.add_argument("--out", type=Path, default=Path("data/nab_results"))
    r = sub.add_parser(
        "rca", help="a recorded Nezha day through the pipeline: recall, precision, AS@1, AS@3 of the root cause"
    )
    r.add_argument(
        "--data", type=Path, default=Path("../shared/datasets/nezha-trainticket"), help="the Nezha dataset folder"
    )
    r.add_argument("--day", default=None, help="rca_data/<day> to load (default: the first)")
    r.add_argument("--workdir", type=Path, default=Path("data/eval_rca"), help="scratch DATA_DIR (recreated)")
    r.add_argument("--faults", type=int, default=None, help="only the first N fault blocks (a quick run)")
    r.add_argument(
        "--sensitivity", action="store_true", help="also re-rank the incidents varying each root-cause hyperparameter"
    )
    f = sub.add_parser("forecast", help="forecaster accuracy on generator traffic (and NAB): MASE vs seasonal naive")
    f.add_argument("--workdir", type=Path, default=Path("data/eval_forecast"), help="scratch DATA_DIR (recreated)")
    f.add_argument("--days", type=float, default=4.0, help="days of generator traffic (history + evaluated)")
    f.add_argument("--rate", type=float, default=2.0, help="generator root requests per second")
    f.add_argument("--seed", type=int, default=11)
    f.add_argument("--nab", type=Path, default=None, help="the NAB dataset folder (its 5-minute series are added)")
    args = p.parse_args(argv)
    if args.cmd == "forecast":
        from anomaly_detection.evaluation import forecast

        print(
            forecast.report(
                forecast.run(args.workdir, days=args.days, rate=args.rate, seed=args.seed, nab_data=args.nab)
            )
        )
        return 0
    if args.cmd == "rca":
        from anomaly_detection.evaluation import pipeline, rca

        result, info = pipeline.run(args.data, args.workdir, faults_subset=args.faults, day=args.day)
        print(
            f"loaded {info['events']} events {info['first']} .. {info['last']}; replay {info['replay_s']} s, "
            f"spark {info['spark_s']} s, detector {info['detector_s']} s; anomalies={info['anomalies']}"
        )
        print(rca.report(result))
        if args.sensitivity:
            print("sensitivity (one hyperparameter varied, the others at their defaults):")
            for name, value, as1, as3 in pipeline.sensitivity(args.workdir, info["faults"]):
                print(f"  {name}={value}: as1={as1:.3f} as3={as3:.3f}")
        return 0
    if args.cmd == "scenarios":
        result = scenarios.run(
            args.workdir,
            seed=args.seed,
            aggregator=args.aggregator,
            clean_hours=args.clean_hours,
            warmup_min=args.warmup_minutes,
            spacing_min=args.spacing_minutes,
            scenarios=tuple(args.scenario) if args.scenario else scenarios.DEFAULT_SCENARIOS,
        )
        print(scenarios.report(result))
        return 0
    results = nab.run(args.data, args.out, progress=sys.stderr.isatty())
    print(nab.report(results))
    print(f"result files: {args.out / nab.DETECTOR_NAME}")
    return 0
