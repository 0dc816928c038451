"""The telemetry event schema (one JSON object per span) and its validation.

Aligned with OpenTelemetry spans so OTLP data maps onto it later. Validation is
one pure function used by every producer (generator, replay) and by the Spark
job, so a line is judged the same way everywhere. A rejected line carries a
reason that names the field.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from observability.columns import Column, names

MAX_LINE_BYTES = 1024 * 1024
MAX_FUTURE = timedelta(days=1)
# OpenTelemetry span kinds. A span without one is a server span (what the
# generator and older files mean: each event a request a service answered).
SPAN_KINDS = ("server", "client", "internal", "producer", "consumer")
DEFAULT_KIND = "server"
# Entry spans are a service's requests: SERVER and CONSUMER spans, and root spans
# of any kind. Request metrics count only these; CLIENT, INTERNAL and PRODUCER
# child spans are work inside a request (kept in bronze and traces).
ENTRY_KINDS = ("server", "consumer")
ENTRY_SPAN_SQL = f"(kind IN ({', '.join(repr(k) for k in ENTRY_KINDS)}) OR parent_span_id IS NULL)"
REQUIRED_FIELDS = ("timestamp", "service", "status_code", "latency_ms")
# The one definition of an event's fields and types: the bronze Parquet layout,
# the Spark source's schema and the DuckDB readers derive theirs from it
# (`observability.columns`). Order = bronze column order.
EVENT_COLUMNS = (
    Column("event_id", "string"),
    Column("timestamp", "timestamp"),
    Column("service", "string"),
    Column("endpoint", "string"),
    Column("status_code", "int"),
    Column("latency_ms", "double"),
    Column("trace_id", "string"),
    Column("span_id", "string"),
    Column("parent_span_id", "string"),
    Column("kind", "string", default=DEFAULT_KIND),  # OpenTelemetry span kind, lower case (SPAN_KINDS)
    Column("error_message", "string"),
    Column("attributes", "json"),
)
EVENT_FIELDS = names(EVENT_COLUMNS)
DEFAULT_ENDPOINT = "unknown"

_HEX = re.compile(r"^[0-9a-f]+$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


class InvalidEvent(ValueError):
    """An event that breaks the schema; `str(exc)` is the reason, naming the field."""


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event; `timestamp_ms` is epoch milliseconds UTC."""

    event_id: str
    timestamp_ms: int
    service: str
    endpoint: str
    status_code: int
    latency_ms: float
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    error_message: str | None
    attributes: dict[str, Any] | None
    kind: str = DEFAULT_KIND

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def to_dict(self) -> dict[str, Any]:
        """Wire form: ISO 8601 UTC timestamp with milliseconds."""
        return {
            "event_id": self.event_id,
            "timestamp": format_timestamp(self.timestamp_ms),
            "service": self.service,
            "endpoint": self.endpoint,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "kind": self.kind,
            "error_message": self.error_message,
            "attributes": self.attributes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def format_timestamp(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class TimestampFormatter:
    """`format_timestamp` for a stream of timestamps close in time (the generator, the OTLP
    receiver's spans of one request): each second's prefix is formatted once and kept (up to
    `MAX_SECONDS` of them), the hot path only joins it to the milliseconds' suffix. A request's
    spans interleave a few seconds (its traces started at different times), so one remembered
    second would miss on most spans."""

    __slots__ = ("_prefixes",)
    MAX_SECONDS = 4096
    _SUFFIXES = tuple(f".{milli:03d}Z" for milli in range(1000))

    def __init__(self) -> None:
        self._prefixes: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        prefix = self._prefixes.get(sec)
        if prefix is None:
            if len(self._prefixes) >= self.MAX_SECONDS:
                self._prefixes.clear()
            prefix = self._prefixes[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return prefix + self._SUFFIXES[milli]


def new_event_id() -> str:
    return secrets.token_hex(16)


def parse_timestamp(value: Any, *, now_ms: int | None = None) -> int:
    """ISO 8601 (UTC when no offset is given) or epoch milliseconds -> epoch ms."""
    if isinstance(value, bool):
        raise InvalidEvent("timestamp: must be an ISO 8601 string or epoch milliseconds, got bool")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidEvent("timestamp: epoch milliseconds must be finite")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidEvent("timestamp: empty string")
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent(f"timestamp: unparseable {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    else:
        raise InvalidEvent(f"timestamp: must be an ISO 8601 string or epoch milliseconds, got {type(value).__name__}")
    if ms < 0:
        raise InvalidEvent("timestamp: before 1970")
    if now_ms is None:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
    if ms - now_ms > MAX_FUTURE.total_seconds() * 1000:
        raise InvalidEvent("timestamp: more than a day in the future")
    return ms


def _optional_hex(obj: dict, field: str, pattern: re.Pattern, size: int) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{field}: must be a string of {size} hex digits, got {type(value).__name__}")
    value = value.lower()
    if not pattern.match(value):
        raise InvalidEvent(f"{field}: must be {size} hex digits")
    return value


def validate_event(obj: Any, *, now_ms: int | None = None) -> Event:
    """Validate a decoded JSON value; raise InvalidEvent with a reason naming the field."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"event: must be a JSON object, got {type(obj).__name__}")
    for field in REQUIRED_FIELDS:
        if obj.get(field) is None:
            raise InvalidEvent(f"{field}: required field missing")

    ts = parse_timestamp(obj["timestamp"], now_ms=now_ms)

    service = obj["service"]
    if not isinstance(service, str):
        raise InvalidEvent(f"service: must be a string, got {type(service).__name__}")
    service = service.strip()
    if not service:
        raise InvalidEvent("service: must not be empty")

    endpoint = obj.get("endpoint")
    if endpoint is None:
        endpoint = DEFAULT_ENDPOINT
    elif not isinstance(endpoint, str):
        raise InvalidEvent(f"endpoint: must be a string, got {type(endpoint).__name__}")
    elif not endpoint.strip():
        endpoint = DEFAULT_ENDPOINT

    status = obj["status_code"]
    if isinstance(status, bool) or not isinstance(status, int):
        raise InvalidEvent(f"status_code: must be an integer, got {type(status).__name__}")
    if not 100 <= status <= 599:
        raise InvalidEvent(f"status_code: {status} outside 100-599")

    latency = obj["latency_ms"]
    if isinstance(latency, bool) or not isinstance(latency, (int, float)):
        raise InvalidEvent(f"latency_ms: must be a number, got {type(latency).__name__}")
    latency = float(latency)
    if not math.isfinite(latency):
        raise InvalidEvent("latency_ms: must be finite")
    if latency < 0:
        raise InvalidEvent("latency_ms: must not be negative")

    event_id = obj.get("event_id")
    if event_id is None:
        event_id = new_event_id()
    elif not isinstance(event_id, str) or not event_id or not _HEX.match(event_id.lower()):
        raise InvalidEvent("event_id: must be a hex string")
    else:
        event_id = event_id.lower()

    trace_id = _optional_hex(obj, "trace_id", _HEX32, 32)
    span_id = _optional_hex(obj, "span_id", _HEX16, 16)
    parent_span_id = _optional_hex(obj, "parent_span_id", _HEX16, 16)

    kind = obj.get("kind")
    if kind is None:
        kind = DEFAULT_KIND
    elif not isinstance(kind, str) or kind.lower() not in SPAN_KINDS:
        raise InvalidEvent(f"kind: must be one of {', '.join(SPAN_KINDS)}, got {str(kind)[:40]!r}")
    else:
        kind = kind.lower()

    error_message = obj.get("error_message")
    if error_message is not None and not isinstance(error_message, str):
        raise InvalidEvent(f"error_message: must be a string or null, got {type(error_message).__name__}")

    attributes = obj.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise InvalidEvent(f"attributes: must be an object, got {type(attributes).__name__}")

    return Event(
        event_id=event_id,
        timestamp_ms=ts,
        service=service,
        endpoint=endpoint,
        status_code=status,
        latency_ms=latency,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        error_message=error_message,
        attributes=attributes,
        kind=kind,
    )


def decode_line(raw: bytes | str) -> Any:
    """Bytes of one line -> JSON value, enforcing size, UTF-8 and JSON syntax."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_LINE_BYTES:
        raise InvalidEvent(f"line: {len(raw)} bytes exceeds the 1 MiB limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"line: invalid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_nan_marker)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"json: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # a few KB of brackets: a reject, not a crash of whoever parses it
        raise InvalidEvent("json: nested too deeply") from None


class _NonFinite(float):
    """NaN/Infinity literals survive decoding so the field check can name them."""


def _nan_marker(token: str) -> float:
    return _NonFinite({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[token])


def validate_line(raw: bytes | str, *, now_ms: int | None = None) -> Event:
    """Validate one raw line (bytes from a file or a topic)."""
    return validate_event(decode_line(raw), now_ms=now_ms)
