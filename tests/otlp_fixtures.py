"""The OTLP receiver as a real process, and a two-service app instrumented with the real OpenTelemetry SDK.

`receiver` starts `python -m ingest` on free ports with the test's DATA_DIR and
waits for `GET /health`. `run_shop(...)` is the instrumented app: `frontend`
serves `GET /api/orders/{id}` (SERVER span) and calls `backend` through a
CLIENT span; `backend` serves `POST /api/charge` (SERVER span, the context
propagated with W3C traceparent) and queries postgres (CLIENT span with
db.system). Every `error_every`-th order fails: the backend records the
exception and answers 500, the frontend answers 502. The backend logs one line
per order inside its span (trace context), and both services count orders
(counter) and record the charge amount (histogram). It returns what it sent,
so tests compare the topics against the truth, not against constants.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Receiver:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> httpx.Response:
        return httpx.get(self.http_url + "/health", timeout=5)


def start_receiver(
    data_dir: Path, env_extra: dict | None = None, timeout_s: float = 60.0, expect_healthy: bool = True
) -> Receiver:
    """`python -m ingest`; mapping in-process (OTLP_WORKERS=0, quicker to start) unless env_extra says otherwise.

    Returns once GET /health answers 200 (or answers at all, with expect_healthy=False)."""
    extra = env_extra or {}
    http_port = int(extra.get("OTLP_HTTP_PORT") or free_port())  # a restart keeps its ports
    grpc_port = int(extra.get("OTLP_GRPC_PORT") or free_port())
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "OTLP_HOST": "127.0.0.1",
        "OTLP_HTTP_PORT": str(http_port),
        "OTLP_GRPC_PORT": str(grpc_port),
        "PYTHONPATH": str(ROOT),
        "OTLP_WORKERS": "0",
        **(env_extra or {}),
    }
    log_path = data_dir / f"ingest-{http_port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    rec = Receiver(proc, http_port, grpc_port, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}:\n{rec.output()}")
        try:
            if rec.health().status_code == 200 or not expect_healthy:
                return rec
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_receiver(rec)
    raise RuntimeError(f"receiver not healthy after {timeout_s}s:\n{rec.output()}")


def stop_receiver(rec: Receiver) -> None:
    if rec.proc.poll() is None:
        rec.proc.terminate()
        try:
            rec.proc.wait(20)
        except subprocess.TimeoutExpired:
            rec.proc.kill()
            rec.proc.wait(5)


@pytest.fixture
def receiver(data_dir):
    rec = start_receiver(data_dir)
    yield rec
    stop_receiver(rec)
    assert "Traceback" not in rec.output(), rec.output()


@pytest.fixture
def pooled_receiver(data_dir):
    """The receiver as configured by default: mapping in two worker processes."""
    rec = start_receiver(data_dir, {"OTLP_WORKERS": "2"})
    yield rec
    stop_receiver(rec)
    assert "Traceback" not in rec.output(), rec.output()


def read_values(settings, topic: str) -> list[bytes]:
    from tests.transport_fixtures import read_topic

    return [r.value for r in read_topic(settings, topic, 0)]


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition"):
    """Poll `predicate()` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


# -- the instrumented app ---------------------------------------------------------------
@dataclass
class ShopTruth:
    """What the app did, from the SDK's own span contexts."""

    orders: int
    errors: list[int]
    server_spans: dict[str, list[str]] = field(default_factory=dict)  # service -> span ids (hex)
    client_spans: dict[str, list[str]] = field(default_factory=dict)
    parent_of: dict[str, str] = field(default_factory=dict)  # span id -> parent span id
    trace_of_order: list[str] = field(default_factory=list)
    backend_span_of_order: list[str] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)


def _exporters(protocol: str, endpoint: str):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
            OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
        )
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=endpoint, insecure=True),
        OTLPLogExporter(endpoint=endpoint, insecure=True),
        OTLPMetricExporter(endpoint=endpoint, insecure=True),
    )


class Service:
    """One instrumented service: its tracer, logger and meter providers, exporting over OTLP."""

    def __init__(self, name: str, protocol: str, endpoint: str) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": name, "deployment.environment": "test"})
        span_exp, log_exp, metric_exp = _exporters(protocol, endpoint)
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exp))
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exp))
        self.reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("shop")
        self.logger = self.logger_provider.get_logger("shop")
        meter = self.meter_provider.get_meter("shop")
        self.orders = meter.create_counter("shop.orders", unit="1", description="orders handled")
        self.amount = meter.create_histogram("shop.charge.amount", unit="EUR", description="charged amount")

    def flush(self, timeout_ms: int = 60_000) -> bool:
        ok = self.tracer_provider.force_flush(timeout_ms)
        ok = self.logger_provider.force_flush(timeout_ms) and ok
        return self.meter_provider.force_flush(timeout_ms) and ok

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()


def run_shop(
    protocol: str, endpoint: str, orders: int = 12, error_every: int = 4, flush: bool = True
) -> tuple[ShopTruth, list[Service]]:
    """Run `orders` requests through frontend -> backend -> postgres; returns the truth and the services."""
    from opentelemetry import propagate
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.trace import SpanKind, Status, StatusCode

    frontend, backend = Service("frontend", protocol, endpoint), Service("backend", protocol, endpoint)
    truth = ShopTruth(orders=orders, errors=[])

    def note(service: str, span, kind: str) -> None:
        ctx = span.get_span_context()
        sid = f"{ctx.span_id:016x}"
        (truth.server_spans if kind == "server" else truth.client_spans).setdefault(service, []).append(sid)
        if span.parent is not None:
            truth.parent_of[sid] = f"{span.parent.span_id:016x}"

    def backend_charge(headers: dict, order: int, amount: float) -> int:
        ctx = propagate.extract(headers)
        with backend.tracer.start_as_current_span(
            "POST /api/charge", context=ctx, kind=SpanKind.SERVER, record_exception=False, set_status_on_exception=False
        ) as span:
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("http.route", "/api/charge")
            note("backend", span, "server")
            truth.backend_span_of_order.append(f"{span.get_span_context().span_id:016x}")
            with backend.tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as db:
                db.set_attribute("db.system", "postgresql")
                db.set_attribute("db.operation.name", "SELECT")
                note("backend", db, "client")
            failed = order % error_every == error_every - 1
            backend.orders.add(1, {"outcome": "error" if failed else "ok"})
            if failed:
                try:
                    raise ValueError(f"card declined for order {order}")
                except ValueError as exc:
                    span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("http.response.status_code", 500)
                backend.logger.emit(
                    severity_number=SeverityNumber.ERROR,
                    severity_text="ERROR",
                    body=f"charge failed for order {order}",
                    attributes={"order.id": order},
                )
                return 500
            backend.amount.record(amount, {"currency": "EUR"})
            span.set_attribute("http.response.status_code", 200)
            backend.logger.emit(
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=f"charged order {order}",
                attributes={"order.id": order},
            )
            return 200

    for order in range(orders):
        amount = 10.0 + 7.5 * order
        with frontend.tracer.start_as_current_span("GET /api/orders/{id}", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.request.method", "GET")
            root.set_attribute("http.route", "/api/orders/{id}")
            note("frontend", root, "server")
            truth.trace_of_order.append(f"{root.get_span_context().trace_id:032x}")
            with frontend.tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as call:
                call.set_attribute("http.request.method", "POST")
                call.set_attribute("server.address", "backend")
                note("frontend", call, "client")
                headers: dict = {}
                propagate.inject(headers)
                status = backend_charge(headers, order, amount)
                call.set_attribute("http.response.status_code", status)
            frontend.orders.add(1, {"outcome": "error" if status >= 500 else "ok"})
            if status >= 500:
                truth.errors.append(order)
                root.set_status(Status(StatusCode.ERROR, "upstream backend returned 500"))
                root.set_attribute("http.response.status_code", 502)
            else:
                truth.amounts.append(amount)
                root.set_attribute("http.response.status_code", 200)
    services = [frontend, backend]
    if flush:
        for svc in services:
            assert svc.flush(), f"SDK force_flush failed over {protocol}"
    return truth, services
