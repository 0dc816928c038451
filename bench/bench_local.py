"""Seconds from `make local` to healthy, and resident memory of the running stack.

Goals: healthy within 90 s; at most 4 GB resident in total. Baseline printed
beside it: the bare interpreter start (`python -c pass`) and the memory of one
idle Python process, measured in the same run. Uses a temporary DATA_DIR and
the default ports (8501, 8080, 11434), so nothing else may run there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from goals import goal_line  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def stack_rss(data_dir: str) -> tuple[int, dict[str, int]]:
    total, per = 0, {}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if p.environ().get("DATA_DIR") != data_dir:
                continue
            rss = p.memory_info().rss
            total += rss
            key = " ".join(p.info["cmdline"][1:3])[:60] if p.info["cmdline"] else p.info["name"]
            per[key] = per.get(key, 0) + rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, per


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help: start nothing
    data_dir = tempfile.mkdtemp(prefix="bench-local-") + "/data"
    env = dict(os.environ, DATA_DIR=data_dir)
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    py_start = time.monotonic() - t
    idle = psutil.Process(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"]).pid)
    time.sleep(1)
    idle_rss = idle.memory_info().rss

    t0 = time.monotonic()
    out = subprocess.run(["make", "local"], cwd=ROOT, env=env, capture_output=True, text=True)
    to_healthy = time.monotonic() - t0
    try:
        print(out.stdout[-1500:])
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
        time.sleep(60)  # let the stack settle into steady state (models loaded, first batches done)
        samples = []
        for _ in range(5):
            samples.append(stack_rss(data_dir))
            time.sleep(2)
        total, per = max(samples, key=lambda s: s[0])
    finally:
        subprocess.run(["make", "local-stop"], cwd=ROOT, env=env, capture_output=True, text=True)

    cores = os.cpu_count()
    print(f"cores={cores}")
    print(
        f"make_local_to_healthy_s={to_healthy:.1f} goal<=90 baseline_python_start_s={py_start:.3f} "
        f"ratio={to_healthy / py_start:.0f}x healthy={'yes' if out.returncode == 0 else 'NO'}"
    )
    print(
        f"stack_rss_mb={total / 2**20:.0f} goal<=4096 baseline_idle_python_mb={idle_rss / 2**20:.0f} "
        f"ratio={total / idle_rss:.1f}x"
    )
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"  {v / 2**20:8.0f} MB  {k}")
    healthy = out.returncode == 0
    load = os.getloadavg()[0]
    goal_line(
        "make local to healthy",
        f"{to_healthy:.1f} s (load {load:.1f})" if healthy else f"NOT healthy after {to_healthy:.1f} s",
        "<= 90 s",
        f"python -c pass {py_start:.3f} s",
        healthy and to_healthy <= 90,
    )
    goal_line(
        "resident memory of the running make local stack",
        f"{total / 2**30:.2f} GB ({len(per)} kinds of process)",
        "<= 4 GB",
        f"idle Python process {idle_rss / 2**20:.0f} MB",
        total <= 4 * 2**30 if healthy else None,
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
