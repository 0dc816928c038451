"""This pytest-xdist worker's share of a fixed port band.

`make test` runs the suite on two xdist workers. Fixtures that take the first
free port of a fixed band (the test broker, the model server, the dashboard)
would race across workers: both see a port free, and one then talks to the
other's server. Each worker therefore gets its own slice of the band; without
xdist the whole band is used.
"""

from __future__ import annotations

import os


def worker_share(ports: range | list[int]) -> list[int]:
    """The ports of `ports` that belong to this xdist worker (all of them when not under xdist)."""
    ports = list(ports)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return ports
    index = int(worker[2:])
    share = ports[index::count]
    if not share:
        raise RuntimeError(f"port band {ports[0]}-{ports[-1]} has no port for xdist worker {worker} of {count}")
    return share
