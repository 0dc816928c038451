"""Fault-injection points: `FAULT_POINT=<name>` kills this process (SIGKILL) when it reaches `<name>`.

The fault-injection tests need a crash at one exact place (e.g. after the
detector's commit, before it publishes), not "about 1.5 s in". A stage calls
`fault_point("detector.after_commit")` there; with `FAULT_POINT` unset (always,
outside the tests) it does nothing. Reaching the named point logs it and sends
this process SIGKILL: no cleanup, no flush, no `finally`, exactly as `kill -9`.

Points: `detector.after_commit` (anomaly rows committed, not yet published),
`spark.after_commit` (a micro-batch committed, its aggregates not yet published),
`spark.layers.before_commit` (a committed batch's silver and gold files written, its error_messages
not yet: spark.layer_queue).
"""

from __future__ import annotations

import os
import signal

from observability.logs import get_logger

log = get_logger(__name__)
ENV = "FAULT_POINT"


def fault_point(name: str) -> None:
    """SIGKILL this process if `FAULT_POINT` names this point."""
    if os.environ.get(ENV) != name:
        return
    log.warning("fault point reached: killing this process", point=name, pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
