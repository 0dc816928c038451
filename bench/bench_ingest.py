"""OTLP receiver throughput: spans/s from a client process through `python -m ingest` into the local log.

A client process posts protobuf ExportTraceServiceRequests of 512 spans each
(shaped like an instrumented service's: HTTP server and client spans with
route, method, status, a few resource attributes) over keep-alive connections
to `/v1/traces` (and, second, through the gRPC Export call); the receiver
decodes, maps, publishes and flushes (LOG_FSYNC=batch) before each 200. The
run counts the events that arrived in the raw-events topic, and prints beside
it a same-run baseline: decoding the same request bytes in-process
(`ExportTraceServiceRequest.FromString`), and decoding plus mapping without a
transport. Peak RSS of the receiver is its VmHWM. Goal: >= 50,000 spans/s on
2 cores.

    .venv/bin/python bench/bench_ingest.py [--seconds 10] [--connections 16] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from goals import goal_line  # noqa: E402  (bench/ is on sys.path when run as a script)

SPANS_PER_REQUEST = 512
DISTINCT_REQUESTS = 32

CLIENT = r"""
import http.client, sys, threading, time, pickle
host, port, seconds, conns, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
bodies = pickle.load(sys.stdin.buffer)
sent = [0] * conns
errors = []
deadline = time.monotonic() + seconds
def worker(i):
    c = http.client.HTTPConnection(host, port, timeout=60)
    k = i
    while time.monotonic() < deadline:
        body = bodies[k % len(bodies)]
        k += conns
        c.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            errors.append(r.status); return
        sent[i] += 1
t0 = time.monotonic()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(sent), time.monotonic() - t0, len(errors))
"""

GRPC_CLIENT = r"""
import sys, threading, time, pickle, grpc
target, seconds, conns = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
bodies = pickle.load(sys.stdin.buffer)
sent = [0] * conns
errors = []
deadline = time.monotonic() + seconds
def worker(i):
    ch = grpc.insecure_channel(target)
    call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    k = i
    while time.monotonic() < deadline:
        try:
            call(bodies[k % len(bodies)], timeout=60)
        except grpc.RpcError as e:
            errors.append(e.code()); return
        k += conns
        sent[i] += 1
t0 = time.monotonic()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(sent), time.monotonic() - t0, len(errors))
"""


def build_requests(n: int, seed: int = 7) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    rng = random.Random(seed)
    routes = [("GET", "/api/search"), ("POST", "/api/checkout"), ("GET", "/api/products/{id}"), ("GET", "/api/cart")]
    now_ns = time.time_ns() - 60 * 10**9
    out = []
    for _ in range(n):
        req = ExportTraceServiceRequest()
        for service in ("checkout", "search"):
            rs = req.resource_spans.add()
            for k, v in (
                ("service.name", service),
                ("service.version", "1.4.2"),
                ("host.name", f"{service}-7f9c"),
                ("telemetry.sdk.language", "python"),
            ):
                rs.resource.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
            spans = rs.scope_spans.add().spans
            for i in range(SPANS_PER_REQUEST // 2):
                method, route = rng.choice(routes)
                start = now_ns + rng.randrange(10**9)
                sp = spans.add(
                    trace_id=rng.randbytes(16),
                    span_id=rng.randbytes(8),
                    parent_span_id=rng.randbytes(8) if i % 2 else b"",
                    name=f"{method} {route}",
                    kind=2 if i % 2 == 0 else 3,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + rng.randrange(1, 200) * 10**6,
                )
                code = 500 if rng.random() < 0.02 else 200
                sp.attributes.extend(
                    [
                        KeyValue(key="http.request.method", value=AnyValue(string_value=method)),
                        KeyValue(key="http.route", value=AnyValue(string_value=route)),
                        KeyValue(key="http.response.status_code", value=AnyValue(int_value=code)),
                        KeyValue(key="server.address", value=AnyValue(string_value="shop.internal")),
                    ]
                )
                if code == 500:
                    sp.status.code = 2
                    sp.status.message = "upstream timed out"
        out.append(req.SerializeToString())
    return out


def baseline(bodies: list[bytes], seconds: float = 3.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """((decode-only spans/s, per CPU-second), (decode+map spans/s, per CPU-second)) in this process."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from ingest.mapping import map_traces

    def rate(fn) -> tuple[float, float]:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            for b in bodies:
                n += fn(b)
        return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)

    def decode(b):
        req = ExportTraceServiceRequest.FromString(b)
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)

    return rate(decode), rate(lambda b: len(map_traces(ExportTraceServiceRequest.FromString(b), "raw_events").records))


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of the receiver plus its mapping workers."""
    import psutil

    return _hwm_mb(pid) + sum(_hwm_mb(c.pid) for c in psutil.Process(pid).children(recursive=True))


def count_events(data_dir: Path) -> int:
    os.environ["DATA_DIR"] = str(data_dir)
    from observability.settings import get_settings
    from observability.transport import create_reader

    get_settings.cache_clear()
    s = get_settings()
    with create_reader(s) as r:
        return sum(r.end_offsets(s.raw_events_topic).values())


def run_client(script: str, args: list[str], bodies: list[bytes]) -> tuple[int, float, int]:
    import pickle

    out = subprocess.run(
        [sys.executable, "-c", script, *args], input=pickle.dumps(bodies), capture_output=True, check=True
    )
    sent, elapsed, errors = out.stdout.split()
    return int(sent), float(elapsed), int(errors)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[0, 2],
        help="OTLP_WORKERS values to measure (0: mapping in the receiver's process)",
    )
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import logging

    from tests.otlp_fixtures import start_receiver, stop_receiver

    logging.getLogger("httpx").setLevel(logging.WARNING)
    bodies = build_requests(DISTINCT_REQUESTS)
    print(
        f"requests: {len(bodies)} distinct x {SPANS_PER_REQUEST} spans, {sum(map(len, bodies)) // len(bodies):,} B each; "
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs"
    )
    (decode_rate, decode_cpu), (map_rate, map_cpu) = baseline(bodies)
    print(
        f"baseline in-process: decode {decode_rate:,.0f} spans/s ({decode_cpu:,.0f} per CPU-second); "
        f"decode + map, no transport {map_rate:,.0f} spans/s ({map_cpu:,.0f} per CPU-second)"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for workers, proto in [(w, p) for w in args.workers for p in ("http", "grpc")]:
            data_dir = Path(tmp) / f"{proto}-{workers}"
            data_dir.mkdir()
            rec = start_receiver(data_dir, {"OTLP_WORKERS": str(workers)}, timeout_s=120)
            try:
                cpu0 = _cpu_seconds(rec.proc.pid)
                if proto == "http":
                    sent, elapsed, errors = run_client(
                        CLIENT,
                        ["127.0.0.1", str(rec.http_port), str(args.seconds), str(args.connections), "/v1/traces"],
                        bodies,
                    )
                else:
                    sent, elapsed, errors = run_client(
                        GRPC_CLIENT, [rec.grpc_target, str(args.seconds), str(args.connections)], bodies
                    )
                cpu = _cpu_seconds(rec.proc.pid) - cpu0
                rss = peak_rss_mb(rec.proc.pid)
            finally:
                stop_receiver(rec)
            arrived = count_events(data_dir)
            spans = sent * SPANS_PER_REQUEST
            assert errors == 0, f"{errors} requests failed"
            assert arrived == spans, f"{spans} spans acknowledged but {arrived} in the topic"
            results.append(
                (f"{proto}, OTLP_WORKERS={workers}", spans / elapsed, spans / max(cpu, 1e-9), rss, sent, elapsed)
            )
    load = os.getloadavg()[0]
    print(f"load average at the end {load:.1f}")
    for proto, rate, per_cpu, rss, sent, elapsed in results:
        goal = "meets" if rate >= 50_000 else "BELOW"
        print(
            f"receiver OTLP/{proto}: {rate:,.0f} spans/s ({per_cpu:,.0f} per receiver CPU-second), "
            f"{sent} requests in {elapsed:.1f} s, peak RSS {rss:.0f} MiB; {goal} the 50,000 spans/s goal; "
            f"{rate / decode_rate:.2f}x of decode-only"
        )
    for proto, rate, per_cpu, rss, _sent, _elapsed in results:
        goal_line(
            f"OTLP receiver, 512-span protobuf requests into the local log, {proto}",
            f"{rate:,.0f} spans/s ({per_cpu:,.0f} per receiver CPU-s, peak RSS {rss:.0f} MiB; load {load:.1f})",
            ">= 50,000 spans/s",
            f"decode-only {decode_rate:,.0f} spans/s, decode + map {map_rate:,.0f} spans/s",
            rate >= 50_000,
        )
    return 0


def _cpu_seconds(pid: int) -> float:
    """CPU time of the receiver and its mapping workers."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        t = p.cpu_times()
        total += t.user + t.system
    return total


if __name__ == "__main__":
    raise SystemExit(main())
