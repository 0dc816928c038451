"""Sample events for the schema, replay and transport tests: valid ones and bad lines of every kind."""

from __future__ import annotations

import json
import time

NOW_MS = int(time.time() * 1000)


def good_event(i: int, ts_ms: int | None = None, **overrides) -> dict:
    ev = {
        "event_id": f"{i:032x}",
        "timestamp": (NOW_MS - 3_600_000 + i) if ts_ms is None else ts_ms,
        "service": ("checkout", "payments", "search", "inventory", "database")[i % 5],
        "endpoint": "GET /api/search",
        "status_code": 200 if i % 7 else 503,
        "latency_ms": 12.5 + (i % 100),
        "trace_id": f"{i + 1:032x}",
        "span_id": f"{i + 1:016x}",
        "parent_span_id": None,
        "error_message": None if i % 7 else "connection pool exhausted",
        "attributes": {"host": "search-1"},
    }
    ev.update(overrides)
    return ev


def good_line(i: int, **overrides) -> bytes:
    return json.dumps(good_event(i, **overrides)).encode()


def _without(field: str) -> bytes:
    ev = good_event(0)
    del ev[field]
    return json.dumps(ev).encode()


def _with(**fields) -> bytes:
    return json.dumps(good_event(0, **fields)).encode()


# (kind, raw line, text the rejection reason must contain: the field it names)
BAD_LINES: list[tuple[str, bytes, str]] = [
    ("invalid json", b'{"service": "checkout", "status_code": 200,', "json"),
    ("not an object", b"[1, 2, 3]", "event"),
    ("bare string", b'"hello"', "event"),
    ("missing timestamp", _without("timestamp"), "timestamp"),
    ("missing service", _without("service"), "service"),
    ("missing status_code", _without("status_code"), "status_code"),
    ("missing latency_ms", _without("latency_ms"), "latency_ms"),
    ("empty service", _with(service="   "), "service"),
    ("service not a string", _with(service=42), "service"),
    ("status as string", _with(status_code="200"), "status_code"),
    ("status as bool", _with(status_code=True), "status_code"),
    ("status out of range", _with(status_code=700), "status_code"),
    ("status below range", _with(status_code=99), "status_code"),
    ("negative latency", _with(latency_ms=-1.5), "latency_ms"),
    ("latency as string", _with(latency_ms="fast"), "latency_ms"),
    ("NaN latency", _with(service="search").replace(b'"latency_ms": 12.5', b'"latency_ms": NaN'), "latency_ms"),
    (
        "Infinity latency",
        _with(service="search").replace(b'"latency_ms": 12.5', b'"latency_ms": Infinity'),
        "latency_ms",
    ),
    ("unparseable timestamp", _with(timestamp="yesterday at noon"), "timestamp"),
    ("timestamp > 1 day in the future", _with(timestamp=NOW_MS + 2 * 86_400_000), "timestamp"),
    ("line over 1 MiB", _with(attributes={"blob": "x" * (1024 * 1024 + 10)}), "line"),
    ("invalid UTF-8", _with(service="checkout").replace(b'"checkout"', b'"check\xff\xfeout"'), "UTF-8"),
    ("bad trace_id", _with(trace_id="not-a-trace-id"), "trace_id"),
    ("short span_id", _with(span_id="abc123"), "span_id"),
    ("bad parent_span_id", _with(parent_span_id="zz" * 8), "parent_span_id"),
    ("attributes not an object", _with(attributes=["a", "b"]), "attributes"),
    ("event_id not hex", _with(event_id="event-1"), "event_id"),
    ("endpoint not a string", _with(endpoint=["GET", "/"]), "endpoint"),
    ("error_message not a string", _with(error_message=500), "error_message"),
    (
        "nested too deeply",
        _with(attributes={"a": "PLACEHOLDER"}).replace(b'"PLACEHOLDER"', b"[" * 3000 + b"]" * 3000),
        "json",
    ),
]
