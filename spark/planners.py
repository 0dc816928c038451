"""Hands back the memory of Spark's idle Python Data Source planners.

Why: Spark runs a Python data source's planning (`lookup_data_sources`,
`create_data_source`, `plan_data_source_read`) in Python processes it forks
from one daemon per planner module, and keeps each daemon for the life of the
application. They work only while a query starts (the `load()` and the stream's
first micro-batch) and then sit idle: three daemons and their forked workers
held ~0.32 GB RSS at the job's peak, about the whole gap to issue 17's 2.0 GB
(`bench/bench_spark.py` prints the peak by process). Spark frees an idle forked
worker after 60 s, never a daemon.

Only the `python -m spark.streaming_job --available-now` process ends them: its
queries all start at once and none restarts, and it stops the session after, so
once each has read rows (`spark.supervisor`'s `settled`) nothing plans again. A
continuous job keeps them, and so does a job run in a session that goes on being
used (a test's second job failed the same way). Spark starts a new
daemon when it finds its old one gone, but not when it first has idle workers of
that daemon to drop, which it does by writing to the dead daemon's stdin; a
lazily started or restarted query's `load()` then failed with
"java.io.IOException: Stream closed" (found by trying it in the continuous
job's test, tests/test_spark_otlp.py).

A daemon's SIGTERM handler sends SIGHUP to its own process group (it made one
with `setpgid` at start), which ends the workers it forked; nothing outside
that group is signalled.
"""

from __future__ import annotations

import os
import signal

import psutil

from observability.logs import get_logger

log = get_logger("spark.planners")

PLANNER_MODULES = frozenset(
    f"pyspark.sql.worker.{name}" for name in ("lookup_data_sources", "create_data_source", "plan_data_source_read")
)
DAEMON_MODULE = "pyspark.daemon"


def planner_daemons(root: psutil.Process | None = None) -> dict[psutil.Process, str]:
    """The planner daemons among `root`'s descendants (default: this process's; Spark's JVM is a
    child), each with its planner's name. A worker a daemon forked carries the daemon's command
    line too: it is left out, its daemon's SIGTERM ends it."""
    root = root or psutil.Process()
    found: dict[psutil.Process, str] = {}
    for proc in root.children(recursive=True):
        try:
            argv = proc.cmdline()
            if not (DAEMON_MODULE in argv and argv[-1] in PLANNER_MODULES):
                continue
            parent = proc.parent()
            if parent is not None and parent.cmdline() == argv:
                continue  # a forked worker
        except psutil.Error:
            continue
        found[proc] = argv[-1].rsplit(".", 1)[-1]
    return found


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a daemon and the workers it forked (0 for what has already gone)."""
    total = 0
    try:
        for p in (proc, *proc.children(recursive=True)):
            total += p.memory_info().rss
    except psutil.Error:
        pass
    return total


def reap(root: psutil.Process | None = None, wait_seconds: float = 2.0) -> int:
    """SIGTERM the idle planner daemons (with their workers); returns how many were ended.

    Call it only when no query will plan again (see the module docstring): a daemon ended
    mid-plan fails that query's start, and so does a later start through it.
    """
    daemons = planner_daemons(root)
    if not daemons:
        return 0
    freed = sum(tree_rss(d) for d in daemons)
    ended = []
    for d, name in daemons.items():
        try:
            d.terminate()
        except psutil.Error:
            continue
        ended.append(name)
    _, alive = psutil.wait_procs(list(daemons), timeout=wait_seconds)
    for d in alive:  # a daemon that ignored SIGTERM (it never should): its group, workers too
        try:
            if os.getpgid(d.pid) == d.pid:
                os.killpg(d.pid, signal.SIGKILL)
        except OSError:
            pass
    log.info("idle planners ended", daemons=sorted(ended), rss_mb=round(freed / 2**20))
    return len(ended)
