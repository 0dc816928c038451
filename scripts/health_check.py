"""Health report of the running platform: `scripts/health_check.sh` / `make health`.

Prints each service's process (when `make local` runs them), its port and HTTP
health, the component checks of `observability.health` (the same checks the
monitoring DAG records), DuckDB row counts per table and the pipeline lag.
Exits 1 when anything is unhealthy. `--component NAME` checks one component
(the container health checks use it).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from observability import tables  # noqa: E402
from observability.health import run_all_checks  # noqa: E402
from observability.settings import get_settings  # noqa: E402
from observability.store import Store, utcnow  # noqa: E402

MARK = {"healthy": "OK  ", "degraded": "WARN", "unhealthy": "FAIL"}


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def supervised_processes(settings) -> dict[str, str] | None:
    """name -> state of the processes `make local` runs, or None when it is not running."""
    conf = settings.data_dir / "run" / "supervisord.conf"
    if not conf.exists():
        return None
    out = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "status"], capture_output=True, text=True
    )
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("unix://", "error")):
            states[parts[0]] = parts[1]
    return states or None


def main() -> int:
    p = argparse.ArgumentParser(description="platform health report")
    p.add_argument("--component", help="check only components whose name contains this")
    args = p.parse_args()
    s = get_settings()
    unhealthy = []

    results = run_all_checks(s, include_ingest=True, include_forecaster=True, include_indexer=True)
    if args.component:
        results = [r for r in results if args.component in r.component]
        for r in results:
            print(f"{MARK.get(r.status, r.status)} {r.component}: {r.detail}")
        return 0 if results and all(r.status != "unhealthy" for r in results) else 1

    procs = supervised_processes(s)
    if procs is not None:
        print("== processes (make local)")
        for name, state in sorted(procs.items()):
            ok = state == "RUNNING"
            print(f"{'OK  ' if ok else 'FAIL'} {name:24s} {state}")
            if not ok:
                unhealthy.append(f"process {name}")

    print("== ports")
    host, oport = s.ollama_host_port
    otlp_host = "127.0.0.1" if s.otlp_host in ("0.0.0.0", "::") else s.otlp_host
    for name, (h, port) in {
        "dashboard": (s.dashboard_host, s.dashboard_port),
        "airflow": ("127.0.0.1", s.airflow_port),
        "model server": (host, oport),
        "otlp http": (otlp_host, s.otlp_http_port),
        "otlp grpc": (otlp_host, s.otlp_grpc_port),
    }.items():
        ok = port_open(h, port)
        print(f"{'OK  ' if ok else 'FAIL'} {name:24s} {h}:{port} {'listening' if ok else 'closed'}")
        if not ok:
            unhealthy.append(f"port {port}")

    print("== components")
    for r in results:
        lat = f" ({r.latency_ms:.0f} ms)" if r.latency_ms is not None else ""
        print(f"{MARK.get(r.status, r.status)} {r.component:24s} {r.detail}{lat}")
        if r.status == "unhealthy":
            unhealthy.append(r.component)

    store = Store.from_settings(s, max_wait_seconds=20)
    print("== duckdb", s.duckdb_path)
    try:
        for table, n in store.table_counts().items():
            print(f"     {table:24s} {n:>12,d}")
        row = store.fetch_one(f"SELECT max(max_event_time) FROM {tables.STREAM_PROGRESS}")
        newest: datetime | None = row[0] if row else None
        if newest is None:
            print("     pipeline lag: no events processed yet")
        else:
            print(
                f"     pipeline lag: {(utcnow() - newest).total_seconds():.1f} s (newest event {newest:%Y-%m-%d %H:%M:%S} UTC)"
            )
    except Exception as exc:  # a report, never a traceback
        print(f"FAIL duckdb: {exc}")
        unhealthy.append("duckdb")

    print("== overall:", "UNHEALTHY: " + ", ".join(unhealthy) if unhealthy else "healthy")
    return 1 if unhealthy else 0


if __name__ == "__main__":
    raise SystemExit(main())
