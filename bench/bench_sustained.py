"""OTLP ingest and the Spark job together, sustained: spans/s, lag and the stack's memory over minutes.

Issue 17's goal: 50,000 spans/s for 10 minutes through `python -m ingest` and
the Spark job in continuous mode, the job never falling behind by 30 s or
more, with the whole `make local` stack under 4 GB RSS.

    .venv/bin/python bench/bench_sustained.py [--rate 50000] [--duration 600] [--stack local|core]
                                              [--protocol http|grpc] [--connections 16] [--baseline-seconds 10]

What runs:
- `--stack local` (the default): `make local` itself (supervisord, every service, the
  generator too) in a temporary DATA_DIR on free ports; the load goes to its receiver
  and the memory figure is every process of that stack. `--stack core`: only
  `python -m ingest` and `python -m spark.streaming_job` (continuous), started with the
  environment `make local` gives them: the quicker run while developing.
- The load: a client process POSTs protobuf ExportTraceServiceRequests of 512 spans
  (built once with the real opentelemetry-proto classes: 64 traces of 8 spans over three
  services, with parent links, shaped like bench_ingest's spans) to `/v1/traces` (or the gRPC Export call) at `--rate` spans/s, paced by a schedule:
  request i is due at t0 + i * 512 / rate. The OpenTelemetry Python SDK cannot itself
  produce 50,000 spans/s on 2 cores (its exporter spends more CPU per span than the
  receiver), so the bodies are pre-encoded; each request patches in place (both are
  fixed-size fields) a per-request number into its trace and span ids and the current
  time into its start/end times, so event ids stay unique (the job de-duplicates by
  event_id) and windows advance as with live traffic. The client never skips or
  drops: when every connection is busy, requests go out late, and the run counts
  them (sent more than 1 s after their due time), the furthest it fell behind, the
  503s it retried and the requests that were due but never sent by the end.
- Before the load, one priming request; the load starts once the job has committed
  it (the JVM's start-up is not counted as lag). After `--duration`, up to `--drain`
  seconds for the job to commit the rest.
- Every `--sample-interval` seconds: spans the receiver acknowledged (client),
  the raw-events topic's end offsets (durably published), the metrics query's
  committed offsets (its checkpoint: `commits/` and `offsets/`), the lag, RSS (and PSS)
  and CPU of every process of the stack. Lag, per partition, is the age of the oldest
  span the job has not committed: now minus the time that span's offset was first
  seen published (interpolated between samples); 0 when the job has committed all.
  A timeline line every `--timeline-interval` seconds.
- Baseline, same run, before the stack starts: the receiver alone (the same command,
  into a log of its own) under the same client unpaced for `--baseline-seconds`: the
  receiver's capacity without Spark, and its CPU per span.

Printed at the end: achieved rate, lag max/p95, peak RSS/PSS, CPU-µs per span by
process, the load average, and `GOAL |` lines (bench/goals.py) for the three figures.
On a shared machine the wall figures fall with the load; the CPU per span is the
steadier figure: 2 cores / (CPU-s per span of the stack) is the rate two idle cores
could sustain.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from goals import goal_line  # noqa: E402

SPANS_PER_REQUEST = 512  # as bench_ingest's requests (and near the SDK's default export batch)
SPANS_PER_TRACE = 8
GOAL_RATE = 50_000  # spans/s
GOAL_LAG_S = 30.0
GOAL_RSS_BYTES = 4 * 10**9
DISTINCT_REQUESTS = 32
LATE_S = 1.0  # a request sent this much after its due time counts as late
PRIME_ID_BASE = 0xF0000000  # the priming request's ids, apart from the load's (the job de-duplicates)

# The client: paced, unique ids and current times patched into pre-encoded bodies, one JSON
# line of counters per second on stdout. Rate 0 = as fast as the connections go (baseline).
CLIENT = r"""
import json, pickle, sys, threading, time
sys.path.insert(0, "bench")
from bench_sustained import Patcher
cfg = pickle.load(sys.stdin.buffer)
bodies, patches, base_ns = cfg["bodies"], cfg["patches"], cfg["base_ns"]
rate, duration, conns, spr = cfg["rate"], cfg["duration"], cfg["connections"], cfg["spans_per_request"]
max_requests = cfg["max_requests"] or float("inf")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
interval = spr / rate if rate > 0 else 0.0
LATE = cfg["late_s"]
lock = threading.Lock()
st = dict(last_done_s=0.0, tickets=0, sent=0, acked_spans=0, rejected_spans=0, errors=0, retries=0, late=0, max_behind_s=0.0,
          behind_s=0.0, unsent_due=0, last_error="")
patcher = Patcher(bodies, patches)

def body_for(i):
    return patcher.body(i, cfg["id_base"] + i + 1, time.time_ns() - base_ns)

def http_sender(host, port, path):
    import http.client
    c = http.client.HTTPConnection(host, port, timeout=60)
    def send(body):
        c.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
        r = c.getresponse(); data = r.read()
        if r.status == 200:
            return "ok", ExportTraceServiceResponse.FromString(data).partial_success.rejected_spans if data else 0
        if r.status in (429, 502, 503, 504):
            return "retry", float(r.getheader("Retry-After") or 1)
        return "error", f"HTTP {r.status}: {data[:200]!r}"
    return send

def grpc_sender(target):
    import grpc
    call = grpc.insecure_channel(target).unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        response_deserializer=ExportTraceServiceResponse.FromString)
    def send(body):
        try:
            return "ok", call(body, timeout=60).partial_success.rejected_spans
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                return "retry", 1.0
            return "error", f"{e.code()}: {e.details()}"
    return send

t0 = time.monotonic()
end = t0 + duration
def worker():
    send = http_sender(*cfg["target"]) if cfg["protocol"] == "http" else grpc_sender(cfg["target"][0])
    while True:
        with lock:
            i = st["tickets"]; st["tickets"] += 1
        due = t0 + i * interval
        now = time.monotonic()
        if due >= end or now >= end or i >= max_requests:
            return
        if due > now:
            time.sleep(due - now)
        elif rate > 0:
            behind = now - due
            with lock:
                st["behind_s"] = max(st["behind_s"], behind)
                st["max_behind_s"] = max(st["max_behind_s"], behind)
                st["late"] += behind > LATE
        body = body_for(i)
        while True:
            try:
                verdict, detail = send(body)
            except Exception as exc:  # a dropped connection: counted, then the next request
                verdict, detail = "error", f"{type(exc).__name__}: {exc}"
                send = http_sender(*cfg["target"]) if cfg["protocol"] == "http" else grpc_sender(cfg["target"][0])
            if verdict == "retry":
                with lock:
                    st["retries"] += 1
                time.sleep(detail)
                if time.monotonic() >= end + 30:
                    break
                continue
            with lock:
                st["last_done_s"] = time.monotonic() - t0
                if verdict == "ok":
                    st["sent"] += 1; st["acked_spans"] += spr - detail; st["rejected_spans"] += detail
                else:
                    st["errors"] += 1; st["last_error"] = str(detail)[:300]
            break

def report(final=False):
    with lock:
        line = dict(st, t=time.time(), elapsed=time.monotonic() - t0, final=final)
        st["behind_s"] = 0.0
    sys.stdout.write(json.dumps(line) + "\n"); sys.stdout.flush()

threads = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
[t.start() for t in threads]
while any(t.is_alive() for t in threads):
    time.sleep(1.0)
    report()
if rate > 0:
    due = int(duration / interval) + (duration % interval > 0)
    st["unsent_due"] = max(0, due - st["sent"] - st["errors"])
report(final=True)
"""


# -- request bodies ------------------------------------------------------------------------
def _kv(key: str, value):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    v = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def build_requests(n: int, base_ns: int, seed: int = 7) -> list[bytes]:
    """`n` ExportTraceServiceRequests of 512 spans: 64 traces of 8 spans across three services,
    as a collector batching an instrumented shop sends them. A trace: checkout's server span
    (root), an internal render span, client calls to search and cart, their server spans,
    search's database call; 2% of traces fail in search (500 up the chain). Times start at
    `base_ns`; the client shifts them to its clock."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    rng = random.Random(seed)
    ms = 10**6
    routes = [("POST", "/api/checkout"), ("GET", "/api/products/{id}"), ("GET", "/api/cart")]
    out = []
    for _ in range(n):
        req = ExportTraceServiceRequest()
        scopes = {}
        for service in ("checkout", "search", "cart"):
            rs = req.resource_spans.add()
            for k, v in (
                ("service.name", service),
                ("service.version", "1.4.2"),
                ("host.name", f"{service}-7f9c"),
                ("telemetry.sdk.language", "python"),
            ):
                rs.resource.attributes.append(_kv(k, v))
            scopes[service] = rs.scope_spans.add().spans
        for _t in range(SPANS_PER_REQUEST // SPANS_PER_TRACE):
            trace_id = rng.randbytes(16)
            t0 = base_ns + rng.randrange(10**9)
            fail = rng.random() < 0.02
            method, route = rng.choice(routes)

            def span(service, parent, name, kind, start, dur_ms, attrs, code=200, trace_id=trace_id, scopes=scopes):
                sp = scopes[service].add(
                    trace_id=trace_id,
                    span_id=rng.randbytes(8),
                    parent_span_id=parent,
                    name=name,
                    kind=kind,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + dur_ms * ms,
                )
                sp.attributes.extend(_kv(k, v) for k, v in attrs)
                if code >= 500:
                    sp.status.code = 2
                    sp.status.message = "upstream timed out"
                return sp.span_id

            code = 500 if fail else 200
            http = [("http.request.method", method), ("http.route", route), ("server.address", "shop.internal")]
            root = span("checkout", b"", f"{method} {route}", 2, t0, 180, [*http, ("http.response.status_code", code)])
            span("checkout", root, "render", 1, t0 + 150 * ms, 20, [("template", "page.html")])
            get = [("http.request.method", "GET"), ("server.address", "search.internal")]
            c1 = span("checkout", root, "GET /search", 3, t0 + 5 * ms, 90, [*get, ("http.response.status_code", code)])
            s1 = span(
                "search",
                c1,
                "GET /search",
                2,
                t0 + 7 * ms,
                85,
                [("http.request.method", "GET"), ("http.route", "/search"), ("http.response.status_code", code)],
                code,
            )
            span(
                "search",
                s1,
                "SELECT products",
                3,
                t0 + 10 * ms,
                60,
                [("db.system", "postgresql"), ("db.statement", "SELECT * FROM products WHERE name LIKE $1")],
            )
            cart = [("http.request.method", "GET"), ("server.address", "cart.internal")]
            c2 = span("checkout", root, "GET /cart", 3, t0 + 100 * ms, 40, [*cart, ("http.response.status_code", 200)])
            s2 = span(
                "cart",
                c2,
                "GET /cart",
                2,
                t0 + 102 * ms,
                35,
                [("http.request.method", "GET"), ("http.route", "/cart"), ("http.response.status_code", 200)],
            )
            span("cart", s2, "redis GET", 3, t0 + 105 * ms, 2, [("db.system", "redis")])
        out.append(req.SerializeToString())
    return out


def find_patches(bodies: list[bytes]) -> list[dict]:
    """Byte offsets, per body, of every span's start/end times (fixed64) and of the first 4 bytes
    of its trace and span ids, found by their field tags; checked by `check_patching`."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        times, ids, pos = [], [], 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    fields = [(b"\x0a\x10", sp.trace_id, ids), (b"\x12\x08", sp.span_id, ids)]
                    if sp.parent_span_id:
                        fields.append((b"\x22\x08", sp.parent_span_id, ids))
                    for tag, value, into in (
                        *fields,
                        (b"\x39", struct.pack("<Q", sp.start_time_unix_nano), times),
                        (b"\x41", struct.pack("<Q", sp.end_time_unix_nano), times),
                    ):
                        at = body.find(tag + value, pos)
                        if at < 0:
                            raise RuntimeError("cannot locate a span field in the encoded request")
                        into.append(at + len(tag))
                        pos = at + len(tag) + len(value)
        out.append({"time": times, "ids": ids})
    return out


class Patcher:
    """A pre-encoded request with a request number in its ids and a clock shift in its times.

    Both are fixed-size fields (the ids' first 4 bytes; fixed64 times), so the bytes change
    in place and the body stays a valid ExportTraceServiceRequest; parent ids get the same
    number, so parent links within the request still hold."""

    def __init__(self, bodies: list[bytes], patches: list[dict]) -> None:
        import numpy as np

        self.arrays = [np.frombuffer(b, np.uint8) for b in bodies]
        self.idx = [
            (np.asarray(p["time"])[:, None] + np.arange(8), np.asarray(p["ids"])[:, None] + np.arange(4))
            for p in patches
        ]

    def body(self, i: int, number: int, delta_ns: int) -> bytes:
        """Template `i` (mod the count) with `number` in its ids and times moved by `delta_ns`."""
        import numpy as np

        k = i % len(self.arrays)
        buf = self.arrays[k].copy()
        t_idx, id_idx = self.idx[k]
        times = buf[t_idx].copy().view("<u8").ravel() + np.uint64(delta_ns)
        buf[t_idx] = times.view(np.uint8).reshape(-1, 8)
        buf[id_idx] = np.frombuffer(np.uint32(number).tobytes(), np.uint8)
        return buf.tobytes()


def check_patching(bodies: list[bytes], patches: list[dict]) -> None:
    """Run the client's patch once here: the body must still decode, with the new ids and times."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    number, delta = 42, 123_456_789_000
    old = ExportTraceServiceRequest.FromString(bodies[0])
    new = ExportTraceServiceRequest.FromString(Patcher(bodies, patches).body(0, number, delta))
    prefix = struct.pack("<I", number)
    pairs = zip(
        (s for rs in old.resource_spans for ss in rs.scope_spans for s in ss.spans),
        (s for rs in new.resource_spans for ss in rs.scope_spans for s in ss.spans),
        strict=True,
    )
    for a, b in pairs:
        assert b.trace_id == prefix + a.trace_id[4:] and b.span_id == prefix + a.span_id[4:]
        assert b.parent_span_id == (prefix + a.parent_span_id[4:] if a.parent_span_id else b"")
        assert b.start_time_unix_nano == a.start_time_unix_nano + delta
        assert b.end_time_unix_nano == a.end_time_unix_nano + delta
        assert b.name == a.name and list(b.attributes) == list(a.attributes)


# -- processes ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, check=None):
    """Poll until `predicate()` is truthy; `check()` may raise (a process that died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def kill_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM to the process the bench started (it stops its own children, as the Spark driver
    stops its JVM), then SIGKILL to whatever is left of its process group."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def stack_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    """The environment `make local` gives its services (scripts/local.sh), on ports of our own."""
    py = str(Path(sys.executable))
    env = dict(os.environ)
    for k in ("DUCKDB_PATH", "OTLP_WORKERS", "TRIGGER_SECONDS", "TOPIC_PARTITIONS"):
        env.pop(k, None)  # the defaults, as make local has them
    env.update(
        DATA_DIR=str(data_dir),
        PYSPARK_PYTHON=py,
        PYSPARK_DRIVER_PYTHON=py,
        SPARK_LOCAL_IP="127.0.0.1",
        PYTHONUNBUFFERED="1",
        MALLOC_ARENA_MAX=os.environ.get("MALLOC_ARENA_MAX", "2"),  # as scripts/local.py sets it
        PYTHONPATH=str(ROOT),
        OTLP_HOST="127.0.0.1",
        OTLP_HTTP_PORT=str(ports["http"]),
        OTLP_GRPC_PORT=str(ports["grpc"]),
        DASHBOARD_PORT=str(ports["dashboard"]),
        AIRFLOW_PORT=str(ports["airflow"]),
        OLLAMA_URL=f"http://127.0.0.1:{ports['model']}",
        **{f"METRICS_PORT_{k[2:].upper()}": str(v) for k, v in ports.items() if k.startswith("m_")},
    )
    return env


def new_ports() -> dict[str, int]:
    from observability import metrics  # the services with a /metrics port, defined once

    names = ["http", "grpc", "dashboard", "airflow", "model"] + [f"m_{s}" for s in metrics.SERVICES]
    return {n: free_port() for n in names}


@dataclass
class Stack:
    """The processes under test: `roots` name -> pid; `started` what to stop."""

    kind: str
    data_dir: Path
    env: dict[str, str]
    ports: dict[str, int]
    procs: list[subprocess.Popen] = field(default_factory=list)
    roots: dict[str, int] = field(default_factory=dict)
    make_local: bool = False
    stopped: bool = False

    @property
    def spark_log(self) -> Path:
        return self.data_dir / ("logs" if self.make_local else "") / "spark.log"

    @property
    def checkpoint(self) -> Path:
        return self.data_dir / "checkpoints" / "metrics"

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{' '.join(p.args[1:3])} exited with {p.returncode} (logs: {self.data_dir})")

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "local":
            self._start_local()
        else:
            self._start_core()
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{self.ports['http']}/health"),
            180,
            "the receiver's /health",
            self.check_alive,
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.data_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it; closed with the bench
        p = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        self.roots[name] = p.pid

    def _start_core(self) -> None:
        self._spawn("ingest", ["-m", "ingest"])
        self._spawn("spark", ["-m", "spark.streaming_job"])

    def _start_local(self) -> None:
        self.make_local = True
        out = subprocess.run(["make", "local"], cwd=ROOT, env=self.env, capture_output=True, text=True)
        print(out.stdout[-1200:], flush=True)
        if out.returncode != 0:
            raise RuntimeError(f"make local failed:\n{out.stderr[-3000:]}")
        pid = int((self.data_dir / "run" / "supervisord.pid").read_text().strip())
        self.roots["supervisord"] = pid

    def processes(self) -> dict[str, list[psutil.Process]]:
        """role -> processes, for the memory and CPU figures."""
        out: dict[str, list[psutil.Process]] = {}
        for name, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            if name == "supervisord":
                out["supervisord"] = [root]
                for child in root.children():
                    try:
                        role = program_of(child.cmdline())
                        role = role if role not in out else f"{role}#{child.pid}"
                        out[role] = [child, *child.children(recursive=True)]
                    except psutil.Error:
                        continue
            else:
                out[name] = tree
        return out

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.make_local:
            before = [p for procs in self.processes().values() for p in procs]
            subprocess.run(["make", "local-stop"], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=180)
            for p in before:  # anything supervisord left behind, by pid
                with contextlib.suppress(psutil.Error):
                    p.kill()
        for p in self.procs:
            kill_group(p)


PROGRAM_HINTS = {  # scripts/local.py programs(): a token of each command line
    "-m llm.serve": "model-server",
    "-m event_generator": "generator",
    "-m ingest": "ingest",
    "-m spark.streaming_job": "spark",
    "-m anomaly_detection.detector": "detector",
    "-m anomaly_detection.forecaster": "forecaster",
    "-m llm.narrator": "narrator",
    "-m anomaly_detection.notifier": "notifier",
    "-m llm.indexer": "indexer",
    "api-server": "airflow-api-server",
    "api_server": "airflow-api-server",  # its process title
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "streamlit": "dashboard",
}


def program_of(cmdline: list[str]) -> str:
    line = " ".join(cmdline)
    for hint, name in PROGRAM_HINTS.items():
        if hint in line:
            return name
    return "other: " + " ".join(Path(a).name for a in cmdline[:3])[:50]


# -- sampling ------------------------------------------------------------------------------
def checkpoint_offsets(checkpoint: Path) -> dict[str, int]:
    """The metrics query's committed end offset per partition (last batch with a commit file)."""
    commits = checkpoint / "commits"
    try:
        ids = sorted(int(p.name) for p in commits.iterdir() if p.name.isdigit())
        if not ids:
            return {}
        lines = (checkpoint / "offsets" / str(ids[-1])).read_text().splitlines()
        return _flatten(json.loads(lines[2]))
    except (FileNotFoundError, IndexError, ValueError):
        return {}


def _flatten(obj, prefix: str = "") -> dict[str, int]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}" if not isinstance(v, dict) else f"{prefix}{k}/"))
        return out
    return {prefix: int(obj)}


class Published:
    """History of the topic's end offsets per partition: when was offset o first seen published."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[float, int]]] = {}

    def add(self, t: float, ends: dict[str, int]) -> None:
        for p, end in ends.items():
            h = self.history.setdefault(p, [])
            if not h or end > h[-1][1]:
                h.append((t, end))

    def time_of(self, partition: str, offset: int) -> float | None:
        """Time offset `offset` (0-based) was first seen, interpolated between samples."""
        h = self.history.get(partition, [])
        prev_t, prev_end = None, None
        for t, end in h:
            if end > offset:
                if prev_t is None:
                    return t
                return prev_t + (offset - prev_end + 1) / (end - prev_end) * (t - prev_t)
            prev_t, prev_end = t, end
        return None

    def lag(self, now: float, ends: dict[str, int], committed: dict[str, int]) -> float:
        """Age of the oldest published span the job has not committed (max over partitions)."""
        worst = 0.0
        for p, end in ends.items():
            c = committed.get(p, 0)
            if c >= end:
                continue
            t = self.time_of(p, c)
            worst = max(worst, now - t if t is not None else 0.0)
        return worst


@dataclass
class Sample:
    t: float
    acked: int
    published: int
    committed: int
    lag_s: float
    rss: int
    pss: int
    cpu: dict[str, float]
    client: dict
    rss_by: dict[str, int]
    pss_by: dict[str, int] = field(default_factory=dict)


def measure_tree(
    groups: dict[str, list[psutil.Process]],
) -> tuple[int, int, dict[str, float], dict[str, int], dict[str, int]]:
    """(RSS, PSS, CPU seconds by role, RSS by role, PSS by role) of every process in `groups`.

    Within a program (the list's first process is its root) a JVM counts as `<role>/jvm`,
    other descendants as `<role>/workers` (Spark's Python workers, the receiver's mapping
    pool). A process's CPU includes its exited children's (`children_user`/`children_system`:
    Spark's short-lived planning workers, Airflow's task processes), so a program's total is
    exact at each sample; the split inside a program moves when a child seen alive exits."""
    rss = pss = 0
    cpu: dict[str, float] = {}
    rss_by: dict[str, int] = {}
    pss_by: dict[str, int] = {}
    seen = set()
    for role, procs in groups.items():
        for i, p in enumerate(procs):
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                mem = p.memory_full_info()
                t = p.cpu_times()
                name = p.name()
            except psutil.Error:
                continue
            rss += mem.rss
            pss += getattr(mem, "pss", mem.rss)
            key = role if i == 0 else (f"{role}/jvm" if "java" in name else f"{role}/workers")
            cpu[key] = cpu.get(key, 0.0) + t.user + t.system + t.children_user + t.children_system
            rss_by[key] = rss_by.get(key, 0) + mem.rss
            pss_by[key] = pss_by.get(key, 0) + getattr(mem, "pss", mem.rss)
    return rss, pss, cpu, rss_by, pss_by


class Client:
    """The paced client process; `latest` holds its last line of counters."""

    def __init__(self, cfg: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "DATA_DIR"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.latest: dict = {"acked_spans": 0}
        self.proc.stdin.write(pickle.dumps(cfg))
        self.proc.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.latest = json.loads(line)
            except ValueError:
                continue

    def cpu_seconds(self) -> float:
        """The client's CPU seconds; the last value seen once it has exited."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            self._last_cpu = max(self._last_cpu, t.user + t.system)
        except psutil.Error:
            pass
        return self._last_cpu

    _last_cpu = 0.0

    def wait(self, timeout: float) -> dict:
        self.proc.wait(timeout)
        self._reader.join(5)
        return self.latest

    def kill(self) -> None:
        kill_group(self.proc, grace_s=5)


def client_cfg(args, bodies, patches, base_ns, target, rate: float, duration: float) -> dict:
    return {
        "bodies": bodies,
        "patches": patches,
        "base_ns": base_ns,
        "rate": rate,
        "duration": duration,
        "connections": args.connections,
        "spans_per_request": SPANS_PER_REQUEST,
        "protocol": args.protocol,
        "target": target,
        "late_s": LATE_S,
        "max_requests": 0,
        "id_base": 0,  # request numbers patched into the ids start after this
    }


def target_of(args, ports: dict[str, int]):
    if args.protocol == "http":
        return ("127.0.0.1", ports["http"], "/v1/traces")
    return (f"127.0.0.1:{ports['grpc']}",)


def run_client_measuring(cfg: dict, groups_fn) -> tuple[dict, float, float, dict[str, float]]:
    """Run a client to its end; (final counters, wall s, client CPU-s, stack CPU-s by role spent meanwhile)."""
    cpu0 = measure_tree(groups_fn())[2]
    t0 = time.monotonic()
    client = Client(cfg)
    try:
        last_cpu = 0.0
        while client.proc.poll() is None:
            last_cpu = max(last_cpu, client.cpu_seconds())
            time.sleep(0.2)
        final = client.wait(10)
    finally:
        client.kill()
    wall = time.monotonic() - t0
    cpu1 = measure_tree(groups_fn())[2]
    return final, wall, last_cpu, {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}


# -- the run -----------------------------------------------------------------------------
def baseline(args, bodies, patches, base_ns, tmp: Path) -> dict:
    """The receiver alone, unpaced, into a log of its own: its capacity without Spark."""
    ports = new_ports()
    stack = Stack("receiver", tmp / "baseline", stack_env(tmp / "baseline", ports), ports)
    try:
        stack.data_dir.mkdir(parents=True)
        stack._spawn("ingest", ["-m", "ingest"])
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{ports['http']}/health"),
            120,
            "the receiver's /health",
            stack.check_alive,
        )
        cfg = client_cfg(args, bodies, patches, base_ns, target_of(args, ports), 0, args.baseline_seconds)
        final, wall, client_cpu, cpu = run_client_measuring(cfg, stack.processes)
    finally:
        stack.stop()
    spans = final["acked_spans"]
    return {
        "rate": spans / max(final.get("last_done_s", wall), 1e-9),  # client start-up not counted
        "receiver_us": sum(cpu.values()) / max(spans, 1) * 1e6,
        "client_us": client_cpu / max(spans, 1) * 1e6,
        "errors": final["errors"],
    }


def prime(args, bodies, patches, base_ns, stack: Stack) -> int:
    """One request, then wait for the job to commit it (JVM start-up is not lag)."""
    cfg = client_cfg(args, bodies, patches, base_ns, target_of(args, stack.ports), 0, 60)
    cfg["connections"], cfg["max_requests"], cfg["id_base"] = 1, 1, PRIME_ID_BASE
    final, *_ = run_client_measuring(cfg, dict)
    if final["sent"] < 1:
        raise RuntimeError(f"the priming request failed: {final.get('last_error')}")
    t0 = time.monotonic()
    wait_for(
        lambda: sum(checkpoint_offsets(stack.checkpoint).values()) >= 1,
        600,
        "the job's first commit",
        stack.check_alive,
    )
    return int(time.monotonic() - t0)


def sustained(args, bodies, patches, base_ns, stack: Stack, reader, topic: str) -> dict:
    published = Published()
    samples: list[Sample] = []

    def sample(client: Client | None) -> Sample:
        now = time.time()
        ends = {str(p): o for p, o in reader.end_offsets(topic).items()}
        committed = checkpoint_offsets(stack.checkpoint)
        published.add(now, ends)
        rss, pss, cpu, rss_by, pss_by = measure_tree(stack.processes())
        if client is not None:
            cpu["client"] = client.cpu_seconds()
        info = dict(client.latest) if client is not None else {}
        return Sample(
            now,
            info.get("acked_spans", 0),
            sum(ends.values()),
            sum(committed.values()),
            published.lag(now, ends, committed),
            rss,
            pss,
            cpu,
            info,
            rss_by,
            pss_by,
        )

    first = sample(None)
    samples.append(first)
    cfg = client_cfg(args, bodies, patches, base_ns, target_of(args, stack.ports), args.rate, args.duration)
    client = Client(cfg)
    t_start = time.time()
    next_line = t_start + args.timeline_interval
    print(
        "\n  t(s)  acked/s(last)  published  committed  backlog  lag(s)  client behind(s)  late  RSS(GB)  PSS(GB)  cores  load",
        flush=True,
    )
    try:
        drain_deadline, sent_end = None, None
        while True:
            time.sleep(args.sample_interval)
            stack.check_alive()
            s = sample(client)
            samples.append(s)
            if client.proc.poll() is not None and drain_deadline is None:
                client.wait(10)
                s.client = dict(client.latest)
                drain_deadline = time.time() + args.drain
                sent_end = s.published  # what the job must commit; the generator (make local) adds more
            done = sent_end is not None and s.committed >= sent_end
            if s.t >= next_line or done:
                print_line(samples, t_start, args.timeline_interval)
                next_line += args.timeline_interval
            if done or drain_deadline is not None and time.time() >= drain_deadline:
                break
    finally:
        client.kill()
    final = dict(client.latest)
    t_end_load = t_start + final.get("elapsed", args.duration)
    return {
        "samples": samples,
        "first": first,
        "t_start": t_start,
        "t_end_load": t_end_load,
        "client": final,
        "drained": sent_end is not None and samples[-1].committed >= sent_end,
        "drain_s": samples[-1].t - t_end_load,
    }


def print_line(samples: list[Sample], t_start: float, window: float) -> None:
    s = samples[-1]
    back = [x for x in samples if x.t >= s.t - window] or [s]
    rate = (s.acked - back[0].acked) / max(s.t - back[0].t, 1e-9)
    c = s.client
    stack_cpu = [sum(v for k, v in x.cpu.items() if k != "client") for x in (back[0], s)]
    cores = (stack_cpu[1] - stack_cpu[0]) / max(s.t - back[0].t, 1e-9)
    print(
        f"{s.t - t_start:6.0f}  {rate:13,.0f}  {s.published:9,}  {s.committed:9,}  {s.published - s.committed:7,}  "
        f"{s.lag_s:6.1f}  {max(x.client.get('behind_s', 0.0) for x in back):16.1f}  {c.get('late', 0):4}  "
        f"{s.rss / 1e9:7.2f}  {s.pss / 1e9:7.2f}  {cores:5.2f}  {os.getloadavg()[0]:5.1f}",
        flush=True,
    )


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def report(args, r: dict, base: dict | None, stack: Stack, totals: dict, startup_s: int, load0: float) -> bool:
    samples: list[Sample] = r["samples"]
    load = [s for s in samples if s.t <= r["t_end_load"] + args.sample_interval]
    c = r["client"]
    elapsed = args.duration  # the schedule's length: requests due in it and acknowledged, over it
    achieved = c.get("acked_spans", 0) / max(elapsed, 1e-9)
    lags = [s.lag_s for s in samples[1:]]
    max_lag, p95_lag = (max(lags) if lags else float("nan")), pct(lags, 0.95)
    peak = max(samples, key=lambda s: s.rss)
    peak_pss = max(s.pss for s in samples)
    # CPU from the load's start to the last sample (the drain included), per span each part
    # handled: the job's per span it committed, the rest per span acknowledged
    cpu0, cpu1 = r["first"].cpu, samples[-1].cpu
    acked = max(c.get("acked_spans", 0), 1)
    committed = max(samples[-1].committed - r["first"].committed, 1)
    by_role: dict[str, float] = {}
    for k, v in cpu1.items():  # sub-roles kept for the receiver and the job, whose workers live long
        role = k if k.split("/")[0] in ("ingest", "spark") else k.split("/")[0]
        spans = committed if role.startswith("spark") else acked
        by_role[role] = by_role.get(role, 0.0) + (v - cpu0.get(k, 0.0)) / spans * 1e6
    stack_us = sum(v for k, v in by_role.items() if k != "client")
    print(
        f"\n== sustained: {args.rate:,} spans/s target for {args.duration:.0f}s, stack={stack.kind}, {args.protocol} =="
    )
    print(f"load average at the start {load0:.1f}, at the end {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    print(f"job start-up (to the priming request's commit): {startup_s}s (not counted as lag)")
    print(
        f"client: {c.get('acked_spans', 0):,} spans acknowledged in {elapsed:.0f}s = {achieved:,.0f} spans/s "
        f"(target {args.rate:,}); {c.get('sent', 0):,} requests, {c.get('late', 0)} sent > {LATE_S:.0f}s late, "
        f"furthest behind {c.get('max_behind_s', 0.0):.1f}s, {c.get('unsent_due', 0)} due but never sent, "
        f"{c.get('retries', 0)} retried (503), {c.get('errors', 0)} failed, "
        f"{c.get('rejected_spans', 0)} spans rejected {c.get('last_error') or ''}"
    )
    last = samples[-1]
    print(
        f"job: committed {last.committed:,} of {last.published:,} published raw events "
        f"({'caught up with the load' if r['drained'] else 'NOT caught up with the load'} "
        f"{r['drain_s']:.0f}s after it ended); "
        f"lag max {max_lag:.1f}s, p95 {p95_lag:.1f}s, at the end of the load {load[-1].lag_s:.1f}s"
    )
    if totals:
        print(
            "job outputs (DuckDB, after stop): "
            + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in totals.items())
        )
    print(
        f"memory: peak RSS {peak.rss / 1e9:.2f} GB, peak PSS {peak_pss / 1e9:.2f} GB (sampled every {args.sample_interval:g}s)"
    )
    print(
        "RSS by process at the peak: "
        + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(peak.rss_by.items(), key=lambda kv: -kv[1]) if v > 20e6)
        + " GB"
    )
    print(
        "PSS by process at the peak: "
        + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(peak.pss_by.items(), key=lambda kv: -kv[1]) if v > 20e6)
        + " GB"
    )
    own_peak: dict[str, int] = {}
    for smp in samples:
        for k, v in smp.rss_by.items():
            own_peak[k] = max(own_peak.get(k, 0), v)
    print(
        "each process's own peak RSS over the run: "
        + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(own_peak.items(), key=lambda kv: -kv[1]) if v > 20e6)
        + " GB"
    )
    batches = batch_stats(stack.spark_log, r["t_start"])
    if batches:
        print(
            f"spark batches during the load: {batches['n']}, {batches['rows']:,.0f} rows each on average, "
            f"{batches['mean_s']:.1f}s mean / {batches['max_s']:.1f}s max processing (trigger every "
            f"{batches['trigger_s']:g}s; a batch longer than the interval it covers means falling behind)"
        )
    print(
        f"CPU per span from the load's start to the last sample, by process (stack {stack_us:.1f} CPU-us/span; "
        f"the job's per span it committed, {committed:,}, the others' per span acknowledged, {acked:,}):"
    )
    for k, v in sorted(by_role.items(), key=lambda kv: -kv[1]):
        print(f"  {v:7.2f} CPU-us/span  {k}")
    if stack_us > 0:
        print(
            f"projection: 2 idle cores could sustain ~{2e6 / stack_us:,.0f} spans/s at this CPU per span (stack only)"
        )
    if base:
        print(
            f"baseline (same run): the receiver alone, unpaced, {args.baseline_seconds:g}s: {base['rate']:,.0f} spans/s, "
            f"{base['receiver_us']:.1f} receiver CPU-us/span, client {base['client_us']:.1f} CPU-us/span, "
            f"{base['errors']} failed"
        )
    b_rate = f"receiver alone {base['rate']:,.0f} spans/s" if base else "not run"
    b_cpu = f"receiver alone {base['receiver_us']:.1f} CPU-us/span" if base else "not run"
    rate_met = achieved >= GOAL_RATE * 0.99 and c.get("late", 0) == 0 and c.get("errors", 0) == 0
    lag_met = max_lag < GOAL_LAG_S and r["drained"]
    goal_line(
        "sustained OTLP -> Spark rate",
        f"{achieved:,.0f} spans/s for {elapsed:.0f}s ({c.get('late', 0)} requests late, {c.get('errors', 0)} failed)",
        f">= {GOAL_RATE:,} spans/s for 600 s",
        b_rate,
        rate_met and args.duration >= 600 and args.rate >= GOAL_RATE,
    )
    goal_line(
        "sustained lag (publish -> job commit)",
        f"max {max_lag:.1f}s, p95 {p95_lag:.1f}s at {achieved:,.0f} spans/s",
        f"< {GOAL_LAG_S:.0f}s throughout",
        b_cpu + f"; stack {stack_us:.1f} CPU-us/span",
        lag_met and args.rate >= GOAL_RATE,
    )
    goal_line(
        f"stack RSS under sustained load ({stack.kind})",
        f"{peak.rss / 1e9:.2f} GB (PSS {peak_pss / 1e9:.2f} GB)",
        "< 4 GB (whole make local stack)",
        "n/a",
        (peak.rss < GOAL_RSS_BYTES) if stack.kind == "local" else None,
    )
    return True


BATCH_LINE = re.compile(
    r"timestamp='(?P<ts>[^']+)'.*event='batch committed'.*? rows_in=(?P<rows>\d+).*? seconds=(?P<s>[\d.]+)"
)


def batch_stats(log: Path, since: float) -> dict:
    """The metrics query's batches (from its log) that ended after `since` and took in rows."""
    from datetime import datetime

    from observability.settings import Settings

    rows, secs = [], []
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    for m in BATCH_LINE.finditer(text):
        ts = datetime.fromisoformat(m["ts"].replace("Z", "+00:00")).timestamp()
        if ts >= since and int(m["rows"]) > 0:
            rows.append(int(m["rows"]))
            secs.append(float(m["s"]))
    if not rows:
        return {}
    trigger = Settings().trigger_seconds
    return {
        "n": len(rows),
        "rows": sum(rows) / len(rows),
        "mean_s": sum(secs) / len(secs),
        "max_s": max(secs),
        "trigger_s": trigger,
    }


def job_totals(data_dir: Path) -> dict:
    from observability.settings import Settings
    from observability.store import Store

    store = Store(Settings(DATA_DIR=str(data_dir)).duckdb_path)
    try:
        rows_in = store.fetch_one("SELECT coalesce(sum(rows_in), 0), count(*) FROM stream_progress")
        reqs = store.fetch_one("SELECT coalesce(sum(request_count), 0) FROM service_metrics")
        return {
            "stream_progress rows_in": int(rows_in[0]),
            "batches": int(rows_in[1]),
            "service_metrics requests": int(reqs[0]),
        }
    except Exception as exc:
        return {"unreadable": f"{type(exc).__name__}: {exc}"[:200]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=GOAL_RATE, help="target spans/s")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--stack", choices=("local", "core"), default="local")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--sample-interval", type=float, default=2.0)
    ap.add_argument("--timeline-interval", type=float, default=30.0)
    ap.add_argument("--drain", type=float, default=120.0, help="seconds after the load for the job to catch up")
    ap.add_argument("--baseline-seconds", type=float, default=10.0, help="0: no baseline")
    ap.add_argument("--keep", action="store_true", help="keep the temporary DATA_DIR")
    args = ap.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    load0 = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-sustained-"))
    base_ns = time.time_ns()
    bodies = build_requests(DISTINCT_REQUESTS, base_ns)
    patches = find_patches(bodies)
    check_patching(bodies, patches)
    print(
        f"requests: {len(bodies)} distinct x {SPANS_PER_REQUEST} spans ({SPANS_PER_TRACE}-span traces), {sum(map(len, bodies)) // len(bodies):,} B each "
        f"(ids and times patched per request); load average {load0:.1f}, {os.cpu_count()} CPUs; DATA_DIR {tmp}",
        flush=True,
    )
    stack = None
    try:
        base = baseline(args, bodies, patches, base_ns, tmp) if args.baseline_seconds > 0 else None
        if base:
            print(
                f"baseline: receiver alone {base['rate']:,.0f} spans/s, {base['receiver_us']:.1f} CPU-us/span",
                flush=True,
            )
        ports = new_ports()
        data_dir = tmp / "data"
        stack = Stack(args.stack, data_dir, stack_env(data_dir, ports), ports)
        t0 = time.monotonic()
        stack.start()
        print(f"stack ({args.stack}) up in {time.monotonic() - t0:.0f}s; priming", flush=True)
        startup_s = prime(args, bodies, patches, base_ns, stack)
        from observability.settings import Settings
        from observability.transport import create_reader

        settings = Settings(DATA_DIR=str(data_dir), TRANSPORT="local")
        with create_reader(settings) as reader:
            r = sustained(args, bodies, patches, base_ns, stack, reader, settings.raw_events_topic)
        stack.stop()
        totals = job_totals(data_dir)
        report(args, r, base, stack, totals, startup_s, load0)
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
