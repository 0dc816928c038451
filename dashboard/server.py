"""Start the dashboard as a `streamlit run` subprocess and wait until it answers.

Used by `python -m dashboard` (host and port from the settings), the browser
tests and the benchmark, so all three run the exact command a user runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
ROOT = APP.parents[1]


def command(host: str, port: int, python: str = sys.executable, app: Path = APP) -> list[str]:
    return [
        python,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
    ]


def health_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/_stcore/health"


def wait_healthy(host: str, port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `/_stcore/health` until it answers "ok" (or fail with the reason)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(health_url(host, port), timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"dashboard on {host}:{port} not healthy after {timeout:.0f}s: {last}")


def start(
    host: str, port: int, env: dict[str, str] | None = None, log_path: Path | None = None, app: Path = APP
) -> subprocess.Popen:
    """Launch `streamlit run dashboard/app.py` (or another app) in its own process group."""
    full_env = {**os.environ, **(env or {})}
    # the child keeps its own copy of the log's descriptor: ours closes once it is started
    with open(log_path, "ab") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(
            command(host, port, app=app),
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server (and only it: the process group it was started in)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=timeout)


def free_port(host: str, ports: range) -> int:
    """The first port in `ports` nothing listens on (tests and bench get a fixed band)."""
    import socket

    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on {host}")
