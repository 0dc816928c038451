"""Airflow test environment: import this module before anything imports `airflow`.

Airflow reads its configuration when first imported, so the environment is set
here at import time: one session-wide AIRFLOW_HOME in a temporary folder with a
SQLite metadata DB migrated once, the repository's `dags/` and no examples.
Every test still gets its own DATA_DIR (and so its own DuckDB) from the shared
`data_dir` fixture; `dag.test()` runs the tasks in this process, where
`get_settings()` reads that DATA_DIR.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = ROOT / "dags"
DAG_IDS = ("monitoring_dag", "data_quality_dag", "retraining_dag")

_HOME = Path(tempfile.mkdtemp(prefix="airflow-test-home-"))
atexit.register(shutil.rmtree, _HOME, True)
AIRFLOW_TEST_ENV = {
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
}
os.environ.update(AIRFLOW_TEST_ENV)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's metadata DB, created once from the ORM (faster than `airflow db migrate`)."""
    from airflow.utils.db import initdb

    initdb()
    return _HOME


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def run_dag(dagbag, dag_id: str) -> tuple[str, dict[str, str]]:
    """`dag.test()` one run; returns (run state, {task_id: state})."""
    dag = dagbag.get_dag(dag_id)
    run = dag.test()
    from airflow.settings import Session

    with Session() as session:
        tis = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
    return str(run.state), tis


# -- tiny real HTTP servers standing in for the model server and the dashboard ----------
class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, str]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path not in self.routes:
            self.send_error(404)
            return
        content_type, body = self.routes[self.path]
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def http_server(routes: dict[str, tuple[str, str]]) -> Iterator[int]:
    """Serve fixed answers on an ephemeral 127.0.0.1 port; yields the port."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


MODEL_SERVER_ROUTES = {"/api/version": ("application/json", json.dumps({"version": "0.6.3"}))}
DASHBOARD_ROUTES = {"/_stcore/health": ("text/plain", "ok")}


@pytest.fixture
def model_server_stand_in() -> Iterator[int]:
    with http_server(MODEL_SERVER_ROUTES) as port:
        yield port


@pytest.fixture
def dashboard_stand_in() -> Iterator[int]:
    with http_server(DASHBOARD_ROUTES) as port:
        yield port


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_live_platform(settings, store, *, narrated: bool = True) -> None:
    """Rows a running platform leaves behind: topics, a fresh micro-batch, recent windows,
    detector and narrator heartbeats, an incident (summarised unless `narrated` is False)."""
    import uuid
    from datetime import timedelta

    from observability import tables
    from observability.store import utcnow
    from observability.transport import create_topics
    from tests.seeding import seed_incident, seed_metrics

    create_topics(settings)
    now = utcnow()
    seed_metrics(store, minutes=30)
    store.execute(
        f"INSERT INTO {tables.STREAM_PROGRESS} (batch_id, processed_at, rows_in, rows_rejected, rows_late, max_event_time) "
        "VALUES (?, ?, ?, 0, 0, ?)",
        [7, now - timedelta(seconds=5), 600, now - timedelta(seconds=10)],
    )
    store.heartbeat("detector", "scored 5 services")
    store.heartbeat("narrator", "backlog=0")
    incident = seed_incident(store, "payments", now - timedelta(minutes=20))
    if narrated:
        store.execute(
            f"INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts) "
            "VALUES (?, ?, 'payments', ?, 'payments error surge', 'template', '{}')",
            [str(uuid.uuid4()), incident, utcnow()],
        )


@pytest.fixture
def live_platform(settings, store, model_server_stand_in, dashboard_stand_in, monkeypatch):
    """Settings pointing at real tiny HTTP servers, and a store seeded as a healthy platform."""
    from observability.settings import get_settings

    monkeypatch.setenv("OLLAMA_URL", f"http://127.0.0.1:{model_server_stand_in}")
    monkeypatch.setenv("DASHBOARD_HOST", "127.0.0.1")
    monkeypatch.setenv("DASHBOARD_PORT", str(dashboard_stand_in))
    monkeypatch.setenv("HEALTH_HTTP_TIMEOUT_SECONDS", "2")
    get_settings.cache_clear()
    live = get_settings()
    seed_live_platform(live, store)
    return live
