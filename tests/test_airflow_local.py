"""scripts/airflow_local.py: Airflow under $DATA_DIR/airflow with a generated admin password."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "airflow_local.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_ADMIN_PASSWORD"}
    env.update({"DATA_DIR": str(data_dir), **extra})
    return env


def run_script(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=script_env(data_dir, **extra),
        capture_output=True,
        text=True,
        timeout=180,
    )


def load_module():
    spec = importlib.util.spec_from_file_location("airflow_local", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_places_everything_under_data_dir(tmp_path):
    data = tmp_path / "data"
    out = run_script(data, "env", AIRFLOW_PORT="8095", AIRFLOW_HOME="/elsewhere")
    assert out.returncode == 0, out.stderr
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.stdout.splitlines())
    home = data.resolve() / "airflow"
    assert exports["AIRFLOW_HOME"] == str(home)  # overrides an inherited one
    assert exports["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home}/airflow.db?timeout=30"
    assert exports["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert exports["AIRFLOW__CORE__PARALLELISM"] == "2"  # `make local`'s memory setting
    chosen = run_script(data, "env", AIRFLOW__CORE__PARALLELISM="4").stdout
    assert "export AIRFLOW__CORE__PARALLELISM=4\n" in chosen  # an inherited value wins
    assert exports["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert exports["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert exports["AIRFLOW__API__HOST"] == "127.0.0.1" and exports["AIRFLOW__API__PORT"] == "8095"
    assert exports["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8095"
    assert exports["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8095/execution/"
    assert exports["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert exports["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert exports["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        home / "simple_auth_manager_passwords.json.generated"
    )
    # the lines are valid shell
    shell = subprocess.run(
        ["bash", "-c", out.stdout + 'echo "$AIRFLOW__API__BASE_URL"'], capture_output=True, text=True
    )
    assert shell.stdout.strip() == "http://127.0.0.1:8095"


def test_init_generates_a_password_once_and_migrates(tmp_path):
    data = tmp_path / "data"
    assert run_script(data, "password").returncode == 1  # nothing before init, and no default

    first = run_script(data, "init")
    assert first.returncode == 0, first.stderr[-2000:]
    pw_file = data / "airflow" / "simple_auth_manager_passwords.json.generated"
    stored = json.loads(pw_file.read_text())
    password = stored["admin"]
    assert set(stored) == {"admin"} and len(password) >= 16 and password != "admin"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert (data / "airflow" / "airflow.db").stat().st_size > 100_000  # migrated metadata DB
    with contextlib.closing(sqlite3.connect(data / "airflow" / "airflow.db")) as conn:
        # readers must not block the scheduler's and API server's commits
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert run_script(data, "password").stdout.strip() == password

    again = run_script(data, "init")  # idempotent: same password, DB already current
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(pw_file.read_text())["admin"] == password

    other = tmp_path / "other"
    other_pw = load_module().ensure_password(_settings(other))[0]
    assert other_pw != password  # generated per installation


AUDIT_LOG_PROBE = r"""
import asyncio, sqlite3, sys, threading
from starlette.requests import Request
from airflow.api_fastapi.logging import decorators
from airflow.models import Log
from airflow.utils.session import create_session

db, hold = sys.argv[1], float(sys.argv[2])
holder = sqlite3.connect(db, check_same_thread=False)
holder.execute("BEGIN IMMEDIATE")  # another writer (scheduler, a request) holds SQLite's write lock
released = threading.Event()


def release():
    holder.commit()
    released.set()


threading.Timer(hold, release).start()
scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b"", "path_params": {"dag_id": "d"}}


async def main():
    ticks = 0

    async def ticker():  # stands for every other request the API server is serving meanwhile
        nonlocal ticks
        while not released.is_set():  # counts only while the other writer holds the lock
            ticks += 1
            await asyncio.sleep(0.05)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    with create_session() as session:
        await decorators.action_logging("probe_event")(request=Request(scope), session=session, user=None)
    task.cancel()
    return ticks


ticks = asyncio.run(main())
with create_session() as session:
    rows = session.query(Log).filter(Log.event == "probe_event").count()
print(getattr(decorators.action_logging, "commits_off_event_loop", False), ticks, rows)
"""


def test_audit_log_commit_waits_for_sqlite_lock_without_blocking_the_api_event_loop(tmp_path):
    """Airflow's audit-log dependency commits a sync session inside `async def`; on SQLite
    a held write lock then froze the API server (CI: 30 s hangs, 'database is locked')."""
    data = tmp_path / "data"
    assert run_script(data, "init").returncode == 0
    module = load_module()
    settings = _settings(data)
    assert (settings.airflow_home / "config" / "airflow_local_settings.py").exists()
    hold = 2.0
    out = subprocess.run(
        [sys.executable, "-c", AUDIT_LOG_PROBE, str(settings.airflow_home / "airflow.db"), str(hold)],
        cwd=tmp_path,
        env=module.full_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    patched, ticks, rows = out.stdout.split()[-3:]
    assert patched == "True"
    # the loop kept serving while the commit waited for the lock (blocked, it ticks once before the wait)
    assert int(ticks) >= 3
    assert int(rows) == 1  # and the audit row was still written once the lock was free


def _settings(data_dir: Path, **kwargs):
    from observability.settings import Settings

    return Settings(DATA_DIR=data_dir, **kwargs)


def test_admin_password_setting_wins(tmp_path):
    module = load_module()
    data = tmp_path / "data"
    generated, written = module.ensure_password(_settings(data))
    assert written and module.ensure_password(_settings(data)) == (generated, False)
    chosen, written = module.ensure_password(_settings(data, AIRFLOW_ADMIN_PASSWORD="correct-horse-battery"))
    assert (chosen, written) == ("correct-horse-battery", True)
    assert module.read_password(_settings(data)) == "correct-horse-battery"
    assert (
        run_script(data, "password", AIRFLOW_ADMIN_PASSWORD="correct-horse-battery").stdout.strip()
        == "correct-horse-battery"
    )


# -- the three processes, for real ---------------------------------------------------------
def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each Airflow process (it stops its own workers), then kill whatever is left of its group.

    Last started, first stopped: the API server (first) goes last, because a task the scheduler's
    workers still run reports its end through it; stopped with the others, that task retried against a
    closed port for ~50 s (seen here: 53 s of a 103 s run, when a retraining task was still running).
    """
    deadline = time.monotonic() + 60
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(1, deadline - time.monotonic()))
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # leftovers only: the group is empty after a clean stop
        p.wait(10)


def _wait(predicate, timeout: float, what: str, procs):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"{p.args} exited with {p.returncode}"
        try:
            result = predicate()
            if result:
                return result
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


@pytest.mark.e2e
@pytest.mark.timeout(420)
def test_api_server_scheduler_and_dag_processor_serve_the_three_dags(tmp_path):
    from observability import health
    from observability.settings import Settings
    from observability.store import Store

    data = tmp_path / "data"
    port = free_port()
    extra = {
        "AIRFLOW_PORT": str(port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        # all three DAGs start at once (unpaused, catchup off): with `make local`'s two task slots the
        # run under test queued behind retraining's model training for its slots
        "AIRFLOW__CORE__PARALLELISM": "4",
        # a task's supervisor notices its failed task's exit at its next 5 s check: 1 s here
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    }
    Store.from_settings(Settings(DATA_DIR=data)).migrate()
    assert run_script(data, "init", **extra).returncode == 0
    password = run_script(data, "password").stdout.strip()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            with open(logs / f"{name}.log", "w") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(SCRIPT), "run", name],
                        cwd=ROOT,
                        env=script_env(data, **extra),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=60)
        _wait(lambda: client.get("/api/v2/monitor/health").status_code == 200, 180, "the API server", procs)
        assert client.post("/auth/token", json={"username": "admin", "password": "admin"}).status_code == 401
        token = client.post("/auth/token", json={"username": "admin", "password": password}).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        dags = _wait(
            lambda: (
                (ids := {d["dag_id"] for d in client.get("/api/v2/dags").json()["dags"]})
                >= {"monitoring_dag", "data_quality_dag", "retraining_dag"}
                and ids
            ),
            180,
            "the three DAGs",
            procs,
        )
        assert dags == {"monitoring_dag", "data_quality_dag", "retraining_dag"}
        assert client.get("/api/v2/importErrors").json()["total_entries"] == 0
        _wait(
            lambda: client.get("/api/v2/monitor/health").json()["scheduler"]["status"] == "healthy",
            120,
            "the scheduler",
            procs,
        )
        # a real run through the scheduler and LocalExecutor: nothing else runs, so it fails, and says why
        resp = client.post("/api/v2/dags/monitoring_dag/dagRuns", json={"logical_date": None})
        assert resp.status_code == 200, resp.text
        run_id = resp.json()["dag_run_id"]
        state = _wait(
            lambda: (
                (s := client.get(f"/api/v2/dags/monitoring_dag/dagRuns/{run_id}").json()["state"])
                in ("success", "failed")
                and s
            ),
            180,
            "the monitoring run",
            procs,
        )
        assert state == "failed"
        rows = Store.from_settings(Settings(DATA_DIR=data)).fetch_all(
            "SELECT DISTINCT component, status FROM health_checks"
        )
        assert len(rows) == len(health.CHECKS) and dict(rows)["detector"] == "unhealthy"
    finally:
        _stop(procs)
    for p in procs:
        assert p.returncode is not None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing left listening
