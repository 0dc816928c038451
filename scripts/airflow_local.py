"""Run Airflow on one machine, without containers: `python scripts/airflow_local.py CMD`.

  env                                   print `export ...` lines for the environment below
  init                                  create $DATA_DIR/airflow, the admin password and the
                                        SQLite metadata DB (idempotent)
  password                              print the admin password
  run api-server|scheduler|dag-processor   exec that Airflow process in the foreground

Everything lives under `$DATA_DIR/airflow` (AIRFLOW_HOME): SQLite metadata,
LocalExecutor, the repository's `dags/`, no example DAGs, the API server and
UI on 127.0.0.1:$AIRFLOW_PORT with the base URL to match, and the simple auth
manager with one `admin` user. Its password is AIRFLOW_ADMIN_PASSWORD when
set, otherwise generated with `secrets` at the first `init` and kept in the
passwords file the simple auth manager reads; there is no default password.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from observability.settings import Settings, get_settings  # noqa: E402

ADMIN_USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
PROCESSES = ("api-server", "scheduler", "dag-processor")
API_WAIT_SECONDS = 180
SQLITE_BUSY_TIMEOUT_SECONDS = 30


def passwords_file(settings: Settings) -> Path:
    return settings.airflow_home.resolve() / PASSWORDS_FILE


def airflow_env(settings: Settings) -> dict[str, str]:
    """The variables that place Airflow under $DATA_DIR/airflow (they override inherited ones)."""
    home = settings.airflow_home.resolve()
    port = settings.airflow_port
    base_url = f"http://127.0.0.1:{port}"
    env = {
        # the platform's own settings, absolute, so task processes find the same files
        "DATA_DIR": str(settings.data_dir.resolve()),
        # tasks import the platform's packages from this checkout, however it was installed
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "AIRFLOW_HOME": str(home),
        # three processes write to one SQLite file: wait for its lock rather than fail a request
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_SECONDS}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor forks this many workers up front (each a copy of the scheduler); the DAGs
        # seldom have more than two tasks ready at once (retraining's two models): more wait in queue.
        # An inherited value wins (like MALLOC_ARENA_MAX): the Airflow test runs all three DAGs at once
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "2"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # the platform's DAGs are meant to run as soon as Airflow is up
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
    }
    if settings.duckdb_path is not None:
        env["DUCKDB_PATH"] = str(Path(settings.duckdb_path).resolve())
    return env


def read_password(settings: Settings) -> str | None:
    path = passwords_file(settings)
    if not path.exists():
        return None
    text = path.read_text().strip()
    return json.loads(text).get(ADMIN_USER) if text else None


def ensure_password(settings: Settings) -> tuple[str, bool]:
    """The admin password: the setting, else the stored one, else a new one. Returns (password, written now)."""
    wanted = settings.airflow_admin_password or read_password(settings) or secrets.token_urlsafe(18)
    if wanted == read_password(settings):
        return wanted, False
    path = passwords_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({ADMIN_USER: wanted}) + "\n")
    os.replace(tmp, path)
    return wanted, True


def airflow_bin() -> str:
    candidate = Path(sys.executable).parent / "airflow"
    return str(candidate) if candidate.exists() else "airflow"


def full_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **airflow_env(settings)}


def cmd_env(settings: Settings) -> int:
    for key, value in airflow_env(settings).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def initialise(settings: Settings) -> bool:
    """Password and migrated metadata DB, under a file lock (concurrent callers wait); True if a password was written."""
    home = settings.airflow_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _, created = ensure_password(settings)
        subprocess.run(
            [airflow_bin(), "db", "migrate"], env=full_env(settings), check=True, cwd=ROOT, stdout=subprocess.DEVNULL
        )
        use_write_ahead_log(home / "airflow.db")
        write_local_settings(home)
        (home / ".initialised").touch()
    return created


def use_write_ahead_log(db: Path) -> None:
    """Switch Airflow's SQLite file to WAL (the mode is stored in the file, so once is enough).

    The API server, scheduler, dag-processor and task workers share the file. In SQLite's
    default rollback journal every reader holds off a writer's commit; in WAL readers and the
    writer never block each other and only writers queue. (The 30 s freezes seen in CI had a
    second cause, fixed in `scripts/airflow_sqlite.py`.)"""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"{db}: could not switch SQLite to WAL (journal_mode={mode})")


LOCAL_SETTINGS = '''"""Written by scripts/airflow_local.py init: see scripts/airflow_sqlite.py."""
import sys

sys.path.insert(0, {scripts!r})
from airflow_sqlite import install  # noqa: E402

__all__ = []  # Airflow copies every exported name into airflow.settings; this file only patches

install()
'''


def write_local_settings(home: Path) -> None:
    """Airflow imports `$AIRFLOW_HOME/config/airflow_local_settings.py` in every process it starts."""
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "airflow_local_settings.py").write_text(
        LOCAL_SETTINGS.format(scripts=str(Path(__file__).resolve().parent))
    )


def cmd_init(settings: Settings) -> int:
    created = initialise(settings)
    where = passwords_file(settings)
    print(
        f"airflow: {settings.airflow_home.resolve()} ready; admin password {'written to' if created else 'kept in'} {where}"
    )
    return 0


def cmd_password(settings: Settings) -> int:
    password = settings.airflow_admin_password or read_password(settings)
    if not password:
        print(
            f"no admin password yet: run `python scripts/airflow_local.py init` ({passwords_file(settings)})",
            file=sys.stderr,
        )
        return 1
    print(password)
    return 0


def wait_for_api_server(settings: Settings, timeout: float = API_WAIT_SECONDS) -> bool:
    """Poll the API server's health endpoint until it answers (True) or the timeout passes (False)."""
    url = f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(1)
    return False


def cmd_run(settings: Settings, process: str) -> int:
    """Replace this process with the Airflow one (foreground, signals go straight to it)."""
    if not (settings.airflow_home / ".initialised").exists():
        initialise(settings)  # a fresh DATA_DIR: never let the API server invent its own password
    else:
        ensure_password(settings)  # AIRFLOW_ADMIN_PASSWORD may have changed since init
    # Task processes report to the API server (the Execution API): a task the
    # scheduler starts before it answers fails to start and waits out a heartbeat timeout.
    if process == "scheduler" and not wait_for_api_server(settings):
        print(
            f"API server on :{settings.airflow_port} not answering after {API_WAIT_SECONDS}s; starting the scheduler anyway",
            file=sys.stderr,
        )
    os.chdir(ROOT)
    os.execve(airflow_bin(), [airflow_bin(), process], full_env(settings))
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Airflow on one machine under $DATA_DIR/airflow")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="print export lines for the Airflow environment")
    sub.add_parser("init", help="create the metadata DB and the admin password (idempotent)")
    sub.add_parser("password", help="print the admin password")
    run = sub.add_parser("run", help="run one Airflow process in the foreground")
    run.add_argument("process", choices=PROCESSES)
    args = p.parse_args(argv)
    settings = get_settings()
    if args.cmd == "env":
        return cmd_env(settings)
    if args.cmd == "init":
        return cmd_init(settings)
    if args.cmd == "password":
        return cmd_password(settings)
    return cmd_run(settings, args.process)


if __name__ == "__main__":
    raise SystemExit(main())
