"""Command line of `python -m event_generator` (generation and `--replay`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from event_generator import scenarios as sc_mod
from observability.logs import get_logger
from observability.schema import parse_timestamp
from observability.settings import get_settings

log = get_logger("event_generator")


def build_parser(settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m event_generator",
        description="Synthetic service telemetry (spans of a small shop's call graph) with injected "
        "anomaly scenarios and ground-truth labels; or --replay of a recorded JSONL file.",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=settings.events_per_second,
        help="root requests (traces) per second, the mean over a day; each request emits ~3.2 span "
        "events on average (checkout 5, search 2). Default EVENTS_PER_SECOND=%(default)s",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of event time to generate (default: until interrupted with --speed realtime; "
        "required with --speed max)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed and flags give the same events")
    p.add_argument(
        "--start",
        default=None,
        help="event-time start, ISO 8601 (UTC if no offset). Default: now (realtime) or now minus "
        "--duration (max), so a max run ends at the present",
    )
    p.add_argument(
        "--speed",
        choices=("realtime", "max"),
        default=None,
        help="realtime: one event-time second per wall second (replay: the original gaps); "
        "max: as fast as possible. Default: realtime for generation, max for --replay",
    )
    p.add_argument(
        "--to-file",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="write events to this JSONL file instead of publishing (labels go to FILE.labels.jsonl)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="TYPE:SERVICE@START[+DURATION]",
        help="inject a named scenario; START and DURATION are minutes of event time after --start "
        f"(DURATION defaults to 10, 20 for latency_drift). Types: {', '.join(sc_mod.SCENARIO_TYPES)}. "
        "Repeatable. Example: error_surge:payments@30",
    )
    p.add_argument(
        "--anomaly-probability",
        type=float,
        default=settings.anomaly_probability,
        help="chance per event-time minute that a random scenario starts (none running, 15 min "
        "after the last one); 0 disables. Default ANOMALY_PROBABILITY=%(default)s",
    )
    p.add_argument(
        "--otlp",
        default=None,
        metavar="URL",
        help="send the spans through an OTLP/HTTP receiver (e.g. http://localhost:4318, `python -m ingest`) "
        "with the OpenTelemetry SDK's exporter instead of publishing to the transport directly",
    )
    p.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="validate and publish the events of a JSONL file with their own timestamps "
        "(default speed for replay: max); rejected lines go to the dead-letter topic",
    )
    p.add_argument(
        "--from-line",
        type=int,
        default=1,
        metavar="N",
        help="replay: start at line N of the file (1-based); a replay stopped by a failing transport "
        "prints the N to resume from",
    )
    p.add_argument(
        "--retry-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="replay: how long to keep retrying a failing transport (disk full, broker down) before "
        "stopping with exit status 1 and the line to resume from (default %(default)s). Generation "
        "always retries until the transport works again",
    )
    return p


def _install_stop(handler) -> None:
    def on_signal(signum, frame):
        log.info("stopping", signal=signal.Signals(signum).name)
        handler()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = get_settings()
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    if args.replay is not None:
        if args.to_file is not None or args.scenario:
            parser.error("--replay publishes a recorded file; it takes no --to-file or --scenario")
        if args.otlp:
            parser.error("--otlp sends generated traffic; --replay publishes to the transport")
        if args.from_line < 1 or args.retry_seconds < 0:
            parser.error("--from-line must be at least 1 and --retry-seconds not negative")
        return _replay(args, settings, args.speed or "max")
    args.speed = args.speed or "realtime"
    if args.otlp and args.to_file is not None:
        parser.error("--otlp sends to a receiver; it takes no --to-file")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be positive")
    if args.speed == "max" and args.duration is None:
        parser.error("--speed max needs --duration")
    if not 0 <= args.anomaly_probability <= 1:
        parser.error("--anomaly-probability must be in [0, 1]")
    try:
        specs = [sc_mod.parse_spec(s) for s in args.scenario]
    except sc_mod.ScenarioSpecError as exc:
        parser.error(str(exc))
    return _generate(args, settings, specs, parser)


def _generate(args, settings, specs, parser) -> int:
    import random

    from event_generator.generator import Generator, RunConfig
    from event_generator.labels import LabelSink, labels_path
    from event_generator.sinks import FileSink, Progress

    now_ms = int(time.time() * 1000)
    if args.start is not None:
        try:
            start_ms = parse_timestamp(args.start, now_ms=now_ms)
        except ValueError as exc:
            parser.error(f"--start: {exc}")
    elif args.speed == "max":
        start_ms = now_ms - int(args.duration * 1000)
    else:
        start_ms = now_ms
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    scenario_rng = random.Random(f"named:{seed}")
    named = []
    for spec in specs:
        s_ms = start_ms + int(spec.start_min * 60000)
        named.append(
            sc_mod.make_scenario(spec.type, spec.service, s_ms, s_ms + int(spec.duration_min * 60000), scenario_rng)
        )
        if args.duration is not None and spec.start_min * 60 >= args.duration:
            log.warning(
                "scenario starts after the run ends; it will not be injected",
                scenario=f"{spec.type}:{spec.service}",
                start_minute=spec.start_min,
                run_minutes=round(args.duration / 60, 2),
            )

    sink = FileSink(args.to_file, settings) if args.to_file else _live_sink(args, settings)
    run_id = f"{datetime.fromtimestamp(start_ms / 1000, tz=UTC):%Y%m%dT%H%M%SZ}-seed{seed}"
    labels = LabelSink(settings, labels_path(settings, args.to_file), run_id)
    cfg = RunConfig(
        rate=args.rate,
        start_ms=start_ms,
        duration_s=args.duration,
        seed=seed,
        speed=args.speed,
        anomaly_probability=args.anomaly_probability,
        scenarios=named,
    )
    total = None if args.duration is None else int(args.duration)
    progress = Progress(total, "generate", "s") if args.speed == "max" else None
    gen = Generator(cfg, sink, labels, progress)
    _install_stop(gen.stop)
    if args.duration is None:  # the long-running service (a bounded run ends before anyone scrapes it)
        from observability import metrics

        metrics.serve(metrics.GENERATOR, settings)
    log.info(
        "generator starting",
        target=sink.target,
        rate=args.rate,
        seed=seed,
        speed=args.speed,
        start=datetime.fromtimestamp(start_ms / 1000, tz=UTC).isoformat(),
        duration_s=args.duration,
        scenarios=len(named),
        anomaly_probability=args.anomaly_probability,
        labels=str(labels.path),
    )
    try:
        result = gen.run()
    finally:
        if progress is not None:
            progress.close()
        sink.close()
    print(
        f"generator summary: published={result.published} scenarios={len(result.scenarios)} "
        f"label_rows={result.label_rows} seconds={result.seconds} seed={seed}",
        flush=True,
    )
    return 0


def _live_sink(args, settings):
    """Where published events go: an OTLP receiver (`--otlp URL`) or the transport."""
    if args.otlp:
        from event_generator.otlp_sink import OtlpSink

        return OtlpSink(args.otlp, settings)
    from event_generator.sinks import TransportSink

    return TransportSink(settings)


def _replay(args, settings, speed: str) -> int:
    from event_generator.replay import file_size, replay
    from event_generator.sinks import Progress, TransportSink

    if not args.replay.is_file():
        print(f"replay: no such file: {args.replay}", file=sys.stderr)
        return 2
    sink = TransportSink(settings, give_up_after_s=args.retry_seconds)
    progress = Progress(file_size(args.replay), "replay", "B")
    stop = {"now": False}
    _install_stop(lambda: stop.update(now=True))
    log.info("replay starting", file=str(args.replay), target=sink.target, speed=speed, from_line=args.from_line)
    try:
        result = replay(
            args.replay, sink, speed=speed, progress=progress, should_stop=lambda: stop["now"], from_line=args.from_line
        )
    finally:
        progress.close()
        sink.close()
    print(result.summary(), flush=True)
    if result.failure is not None:
        print(result.failure_message(args.replay), file=sys.stderr, flush=True)
        return 1
    return 0
