"""Scrape a service's /metrics and read it with Prometheus' own text parser."""

from __future__ import annotations

import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, from GET /metrics (raises when it does not answer 200)."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    r.raise_for_status()
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for_metric(port: int, name: str, predicate=lambda v: v is not None and v > 0, timeout: float = 60, **labels):
    """Poll /metrics until `name{labels}` satisfies `predicate`; returns the last scrape."""
    deadline = time.monotonic() + timeout
    last, error = None, None
    while time.monotonic() < deadline:
        try:
            last = scrape(port)
            if predicate(value(last, name, **labels)):
                return last
        except httpx.HTTPError as exc:  # not listening yet
            error = exc
        time.sleep(0.1)
    got = None if last is None else value(last, name, **labels)
    raise AssertionError(f"{name}{labels} did not satisfy the condition in {timeout}s: {got} ({error})")
