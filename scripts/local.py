"""Run the whole platform as local processes under supervisord (no containers).

`start`: first-run initialisation (schema, topics, model file, Airflow), then
supervisord (daemonised) starts every service, each logging to
`$DATA_DIR/logs/<name>.log` and restarted when it crashes; returns once all
are healthy and prints where the dashboard, the Airflow UI and its login are.
`stop`: stops supervisord and every process it started, nothing else.
`status`: supervisorctl's view.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from observability.health import ingest_health_url  # noqa: E402
from observability.settings import Settings, get_settings  # noqa: E402

PY = sys.executable


def programs(s: Settings) -> dict[str, str]:
    """name -> command line of every service `make local` runs."""
    airflow = f"{PY} scripts/airflow_local.py run"
    return {
        "model-server": f"{PY} -m llm.serve",
        "generator": f"{PY} -m event_generator --speed realtime",
        "ingest": f"{PY} -m ingest",
        "spark": f"{PY} -m spark.streaming_job",
        "detector": f"{PY} -m anomaly_detection.detector",
        "forecaster": f"{PY} -m anomaly_detection.forecaster",
        "narrator": f"{PY} -m llm.narrator",
        "notifier": f"{PY} -m anomaly_detection.notifier",
        "indexer": f"{PY} -m llm.indexer",
        "airflow-api-server": f"{airflow} api-server",
        "airflow-scheduler": f"{airflow} scheduler",
        "airflow-dag-processor": f"{airflow} dag-processor",
        "dashboard": (
            f"{PY} -m streamlit run dashboard/app.py --server.address {s.dashboard_host} "
            f"--server.port {s.dashboard_port} --server.headless true --browser.gatherUsageStats false"
        ),
    }


def health_urls(s: Settings) -> dict[str, str]:
    host, port = s.ollama_host_port
    return {
        "dashboard": f"http://{s.dashboard_host}:{s.dashboard_port}/_stcore/health",
        "airflow": f"http://127.0.0.1:{s.airflow_port}/api/v2/monitor/health",
        "model-server": f"http://{host}:{port}/api/version",
        "ingest": ingest_health_url(s),
    }


def metrics_ports(s: Settings) -> dict[str, int]:
    """process -> the port of its /metrics (METRICS_PORT_<SERVICE>; 0 = off)."""
    return {
        "model-server": s.metrics_port_model_server,
        "generator": s.metrics_port_generator,
        "ingest": s.metrics_port_ingest,
        "spark": s.metrics_port_spark,
        "detector": s.metrics_port_detector,
        "narrator": s.metrics_port_narrator,
        "notifier": s.metrics_port_notifier,
        "forecaster": s.metrics_port_forecaster,
        "indexer": s.metrics_port_indexer,
    }


def run_dir(s: Settings) -> Path:
    return s.data_dir / "run"


def supervisor_conf(s: Settings) -> Path:
    rd = run_dir(s)
    rd.mkdir(parents=True, exist_ok=True)
    s.logs_dir.mkdir(parents=True, exist_ok=True)
    sock = rd / "supervisor.sock"
    env = os.environ.copy()
    env["DATA_DIR"] = str(s.data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    # glibc gives each thread that allocates its own heap arena (up to 8 per core), and freed
    # memory stays in them: two arenas keep the threaded services (Spark driver, DuckDB readers,
    # the receiver) near their working set instead of their high-water mark. Set it to override.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env_line = ",".join(f'{k}="{v}"' for k, v in sorted(env.items()) if _safe_env(k, v))
    lines = [
        "[unix_http_server]",
        f"file={sock}",
        "[supervisord]",
        f"logfile={s.logs_dir / 'supervisord.log'}",
        f"pidfile={rd / 'supervisord.pid'}",
        f"directory={ROOT}",
        "childlogdir=" + str(s.logs_dir),
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
    ]
    for name, cmd in programs(s).items():
        lines += [
            f"[program:{name}]",
            f"command={cmd}",
            f"directory={ROOT}",
            "autostart=true",
            "autorestart=true",
            "startsecs=3",
            "startretries=1000",
            "stopasgroup=true",
            "killasgroup=true",
            "stopwaitsecs=15",
            "redirect_stderr=true",
            f"stdout_logfile={s.logs_dir / (name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            f"environment={env_line}",
        ]
    conf = rd / "supervisord.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _safe_env(k: str, v: str) -> bool:
    # supervisord's environment= syntax cannot carry quotes, '%' or newlines.
    return k.isidentifier() and not any(c in v for c in '"%\n')


def _ctl(conf: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "supervisor.supervisorctl", "-c", str(conf), *args], capture_output=True, text=True, check=check
    )


def _running(conf: Path) -> bool:
    return conf.exists() and _ctl(conf, "pid").returncode == 0 and _ctl(conf, "pid").stdout.strip().isdigit()


def initialise(s: Settings) -> None:
    """First-run work: schema and topics, the model file, Airflow's DB and admin login."""
    steps = [
        [PY, "scripts/init_db.py"],
        [PY, "-m", "llm.model_files", "assemble"],
        [PY, "scripts/airflow_local.py", "init"],
    ]
    for cmd in steps:
        print(f"init: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL if "airflow" in cmd[-2] else None)


def wait_healthy(s: Settings, timeout: float) -> dict[str, bool]:
    urls = health_urls(s)
    ok = {k: False for k in urls}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(ok.values()):
        for name, url in urls.items():
            if not ok[name]:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        ok[name] = r.status == 200
                except Exception:
                    pass
        time.sleep(1)
    return ok


def start(s: Settings, timeout: float) -> int:
    t0 = time.monotonic()
    conf = supervisor_conf(s)
    if _running(conf):
        print("already running; `make local-stop` first to restart")
        return 0
    initialise(s)
    subprocess.run([PY, "-m", "supervisor.supervisord", "-c", str(conf)], cwd=ROOT, check=True)
    ok = wait_healthy(s, timeout)
    print(_ctl(conf, "status").stdout, end="")
    password = subprocess.run(
        [PY, "scripts/airflow_local.py", "password"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"\nstarted in {time.monotonic() - t0:.0f}s; logs in {s.logs_dir}")
    print(f"dashboard:   http://{s.dashboard_host}:{s.dashboard_port}")
    print(f"airflow UI:  http://127.0.0.1:{s.airflow_port}  (login: admin / {password})")
    print(f"model API:   {s.ollama_url}")
    print(f"OTLP:        http://{s.otlp_host}:{s.otlp_http_port} (HTTP), {s.otlp_host}:{s.otlp_grpc_port} (gRPC)")
    on = ", ".join(f"{name} :{port}" for name, port in metrics_ports(s).items() if port)
    print(f"metrics:     http://{s.metrics_host}:PORT/metrics  ({on})")
    print("health:      make health    stop: make local-stop")
    bad = [k for k, v in ok.items() if not v]
    if bad:
        print(f"not healthy after {timeout:.0f}s: {', '.join(bad)} (see {s.logs_dir})", file=sys.stderr)
        return 1
    return 0


def stop(s: Settings) -> int:
    conf = run_dir(s) / "supervisord.conf"
    if not _running(conf):
        print("not running")
        return 0
    pid = int(_ctl(conf, "pid").stdout.strip())
    _ctl(conf, "stop", "all")
    _ctl(conf, "shutdown")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.3)
    print("stopped")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["start", "stop", "status"])
    p.add_argument("--timeout", type=float, default=float(os.environ.get("LOCAL_START_TIMEOUT", 150)))
    args = p.parse_args()
    s = get_settings()
    s.data_dir = s.data_dir.resolve()
    os.environ["DATA_DIR"] = str(s.data_dir)
    if args.command == "start":
        return start(s, args.timeout)
    if args.command == "stop":
        return stop(s)
    conf = run_dir(s) / "supervisord.conf"
    if not _running(conf):
        print("not running")
        return 3
    print(_ctl(conf, "status").stdout, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
