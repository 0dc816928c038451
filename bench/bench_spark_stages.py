"""Where the Spark job's CPU goes, stage by stage, in-process (no JVM): a source range and a batch's layers.

    .venv/bin/python bench/bench_spark_stages.py [--events 500000] [--partitions 4] [--repeats 3] [--otlp]

Publishes a generated backlog to a local log, then times (CPU seconds of this process, DuckDB's
threads included; the best of --repeats) what a source worker does with one partition's range
(`RawEventsStreamReader.read`: the local-log read, the vectorised parse and checks, the staging
of bronze, samples, edges and trace-index partials, the partial window aggregates) and what the
driver's layer queue does with the batch those ranges staged (`write_batch_layers`: the context
window, `compute_layers`, the silver and gold files). The range's first stage, reading its
records, is the baseline the others compare with. `bench_spark.py` measures the whole job;
this says which stage to cut.

`--otlp`: the backlog is OTLP spans instead of generated events, as the receiver publishes them
(`bench_sustained.py`'s requests, 8-span traces over three services with resource and span
attributes, mapped by `ingest.mapping.map_traces`): what `bench_sustained.py`'s load costs the job.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.bench_spark import backlog_events, publish_backlog  # noqa: E402


def source_range(settings, n: int, repeats: int) -> tuple[dict[str, float], list[str]]:
    """CPU-µs per event of one partition's range, by stage (the steps of `RawEventsStreamReader.read`,
    timed one by one); and the bronze files of one batch over every partition."""
    from observability.memory import gc_paused, release_memory
    from spark.source import RangePartition, RawEventsStreamReader, _partial_batches, open_reader, transport_options
    from spark.staging import stage_range
    from spark.vector_parse import VectorParsedRange

    opts = transport_options(settings)
    staging = settings.checkpoint_dir / "staging" / settings.raw_events_topic
    opts.update(topic=settings.raw_events_topic, bronze_dir=str(settings.bronze_dir), staging_dir=str(staging))
    reader, topic = open_reader(opts), settings.raw_events_topic
    end = reader.end_offsets(topic)
    size = min(end.values())

    def reset() -> None:
        shutil.rmtree(settings.bronze_dir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)

    def one_range() -> dict[str, float]:
        reset()
        marks = [time.process_time()]
        with gc_paused():  # as the worker runs it (spark.source.RawEventsStreamReader.read)
            values = reader.read_values(topic, 0, 0, size)
            marks.append(time.process_time())
            parsed = VectorParsedRange(topic, 0, *values, int(time.time() * 1000))
            marks.append(time.process_time())
            _, valid = stage_range(topic, 0, 0, size, parsed, settings.bronze_dir, staging, None, 0)
            marks.append(time.process_time())
            sum(b.num_rows for b in _partial_batches(valid))
            marks.append(time.process_time())
            del values, parsed, valid
        release_memory(gc_generation=1)
        marks.append(time.process_time())
        labels = (
            "local-log read",
            "parse and checks",
            "staging: bronze and side outputs",
            "partial aggregates",
            "memory release",
        )
        return {label: b - a for label, a, b in zip(labels, marks[:-1], marks[1:], strict=True)}

    runs = [one_range() for _ in range(repeats + 1)][1:]  # the first warms imports and caches
    stages = {label: min(r[label] for r in runs) for label in runs[0]}
    stages["whole range (best run)"] = min(sum(r.values()) for r in runs)
    reset()
    source = RawEventsStreamReader(opts)
    for p, e in sorted(end.items()):  # one batch: every partition's range, as the job stages it
        sum(b.num_rows for b in source.read(RangePartition(p, 0, e)))
    reader.close()
    files = sorted(str(f) for f in settings.bronze_dir.rglob("*.parquet"))
    return {k: v / size * 1e6 for k, v in stages.items()}, files


def batch_layers(settings, files: list[str], repeats: int) -> tuple[dict[str, tuple[float, float]], int]:
    """(CPU seconds, wall seconds) of the batch's layers, by stage, and its spans."""
    import duckdb

    from observability import layers

    spans = duckdb.sql(f"SELECT count(*) FROM read_parquet({layers._sql_list(files)})").fetchall()[0][0]
    names = ("context_window", "compute_layers", "write_silver", "write_gold")
    original = {n: getattr(layers, n) for n in names}
    spent: dict[str, tuple[float, float]] = {}

    def timed(name):
        def call(*a, **k):
            t, w = time.process_time(), time.perf_counter()
            try:
                return original[name](*a, **k)
            finally:
                cpu, wall = spent.get(name, (0.0, 0.0))
                spent[name] = (cpu + time.process_time() - t, wall + time.perf_counter() - w)

        return call

    runs = []
    for n in names:
        setattr(layers, n, timed(n))
    try:
        for _ in range(repeats + 1):
            spent.clear()
            t, w = time.process_time(), time.perf_counter()
            layers.write_batch_layers(settings, files)
            runs.append(((time.process_time() - t, time.perf_counter() - w), dict(spent)))
    finally:
        for n in names:
            setattr(layers, n, original[n])
    total, by_stage = min(runs[1:], key=lambda r: r[0])
    return {**by_stage, "whole batch": total}, spans


def publish_otlp(settings, n: int, rate: int = 50_000) -> None:
    """n spans as the OTLP receiver publishes them: bench_sustained's request templates, each
    request's ids patched with its number and its times moved on as a `rate` spans/s load would."""
    from bench_sustained import DISTINCT_REQUESTS, SPANS_PER_REQUEST, Patcher, build_requests, find_patches
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from ingest.mapping import map_traces
    from observability.transport import create_producer

    requests = -(-n // SPANS_PER_REQUEST)
    base_ns = time.time_ns() - int(requests * SPANS_PER_REQUEST / rate * 1e9) - 10**9
    bodies = build_requests(DISTINCT_REQUESTS, base_ns)
    patcher = Patcher(bodies, find_patches(bodies))
    with create_producer(settings) as producer:
        for i in range(requests):
            body = patcher.body(i, i + 1, int(i * SPANS_PER_REQUEST / rate * 1e9))
            producer.send_many(
                map_traces(ExportTraceServiceRequest.FromString(body), settings.raw_events_topic).records
            )
    print(f"published {requests * SPANS_PER_REQUEST:,} OTLP spans ({requests:,} requests)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--otlp", action="store_true", help="OTLP spans as the receiver maps them")
    args = parser.parse_args(argv)
    from observability.settings import Settings
    from observability.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="bench-spark-stages-"))
    try:
        settings = Settings(DATA_DIR=str(tmp), TRANSPORT="local", TOPIC_PARTITIONS=args.partitions)
        Store.from_settings(settings).migrate()
        if args.otlp:
            publish_otlp(settings, args.events)
        else:
            publish_backlog(settings, backlog_events(args.events))
        per_event, files = source_range(settings, args.events, args.repeats)
        print(f"\n== one source range ({args.events // args.partitions:,} events, partition 0): CPU-us per event")
        for stage, us in per_event.items():
            print(f"  {stage:34s} {us:6.2f}")
        by_stage, spans = batch_layers(settings, files, args.repeats)
        print(
            f"\n== the batch's layers ({spans:,} spans, {len(files)} bronze files): "
            "CPU seconds (us per span), wall seconds"
        )
        for stage, (seconds, wall) in by_stage.items():
            print(f"  {stage:34s} {seconds:6.3f}  ({seconds / spans * 1e6:.2f})  {wall:6.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
