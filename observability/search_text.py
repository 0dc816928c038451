"""What gets embedded for search: one text per trace, log template and incident (pure functions).

Texts are built so identical situations give identical texts (the indexer's content cache then
embeds each once): ids, long numbers and exact latencies are masked or bucketed, and a
trace's text names its services, endpoints, status, errors and a coarse duration, not its id.
The embedding model reads at most 256 tokens, so the errors come first and the rest is cut.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

import pandas as pd

MAX_TEXT_CHARS = 1000  # ~256 tokens: what the model reads
MAX_MESSAGE_CHARS = 200

_MASKS = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "<email>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    # ids: 8+ hex/alnum characters that contain a digit (trace ids, hashes, order numbers)
    (re.compile(r"\b(?=[0-9a-z_-]*\d)[0-9a-z_-]{8,}\b", re.I), "<id>"),
    # numbers: decimals and integers of 4+ digits (1-3 digit ones are kept: status codes, counts)
    (re.compile(r"(?<![\w.])\d+\.\d+|(?<![\w.])\d{4,}(?![\w.])"), "<num>"),
)
_SPACES = re.compile(r"\s+")
# the model tolerates nothing that is not printable text
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def text_id(text: str) -> int:
    """Stable signed 64-bit id of a text (the content cache key; BIGINT in DuckDB)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def template(message: str | None) -> str:
    """A log body or error message with ids and numbers masked, on one line (one template per situation)."""
    if message is None:
        return ""
    text = _CONTROL.sub(" ", str(message))
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def duration_words(ms: float | None) -> str:
    """A latency as a word and a bucket, so equal situations share one text."""
    if ms is None or pd.isna(ms):
        return "duration unknown"
    if ms < 100:
        return "fast, under 100 ms"
    if ms < 300:
        return "normal speed, 100-300 ms"
    if ms < 1000:
        return "slow, 300 ms to 1 s"
    if ms < 3000:
        return "very slow, 1-3 s"
    return "extremely slow, over 3 s"


def status_words(code) -> str:
    if code is None or pd.isna(code):
        return "status unknown"
    code = int(code)
    if code >= 500:
        return f"failed with server error {code}"
    if code >= 400:
        return f"rejected with client error {code}"
    return f"succeeded {code}"


def _root(spans: list[dict]) -> dict:
    ids = {s.get("span_id") for s in spans}
    roots = [s for s in spans if not s.get("parent_span_id") or s.get("parent_span_id") not in ids]
    return (roots or spans)[0]


def _code(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def trace_text(spans: list[dict]) -> dict:
    """One trace's summary: {text, service (entry), services, time (start), trace_id}.

    `spans`: the trace's bronze rows as dicts (service, endpoint, status_code, latency_ms,
    error_message, span_id, parent_span_id, timestamp, trace_id). The one place a trace's
    searchable text is built (from bronze now; from the trace index once it exists).
    """
    spans = sorted(spans, key=lambda s: s["timestamp"])
    root = _root(spans)
    services = list(dict.fromkeys(str(s["service"]) for s in spans))
    errors = []
    for s in spans:
        msg = template(s.get("error_message")) if isinstance(s.get("error_message"), str) else ""
        code = _code(s.get("status_code"))
        if msg or (code is not None and code >= 400):
            errors.append(f"{s['service']} {template(s.get('endpoint'))} {'' if code is None else code} {msg}".strip())
    # deepest first: the root cause before the callers that relayed it
    errors = list(dict.fromkeys(reversed(errors)))
    calls = list(dict.fromkeys(f"{s['service']} {template(s.get('endpoint'))}" for s in spans))
    head = (
        f"{root['service']} {template(root.get('endpoint'))} {status_words(root.get('status_code'))}, "
        f"{duration_words(root.get('latency_ms'))}"
    )
    parts = [head]
    if errors:
        parts.append("errors: " + "; ".join(errors))
    parts.append("calls: " + ", ".join(calls))
    return {
        "text": cut(". ".join(parts)),
        "service": str(root["service"]),
        "services": services,
        "time": pd.Timestamp(spans[0]["timestamp"]).to_pydatetime(),
        "trace_id": str(root["trace_id"]),
    }


def log_text(service: str, severity: str | None, body: str | None) -> str:
    """A log record's searchable text: its service, severity and templated body."""
    sev = (severity or "").strip().lower() or "log"
    return cut(f"{service} {sev}: {template(body)}")


def error_message_text(service: str, endpoint: str | None, status_code, message: str) -> str:
    """A span's error message as a searchable 'log' text (the same template for every occurrence)."""
    code = "" if status_code is None or pd.isna(status_code) else int(status_code)
    return cut(f"{service} {template(endpoint)} error {code}: {template(message)}")


def incident_text(
    service: str,
    anomaly_types: list[str],
    root_cause: str | None,
    related: list[str],
    summary: str | None,
    started_at: datetime | None = None,
) -> str:
    """An incident's searchable text: its summary, services, anomaly types and root cause."""
    types = ", ".join(t.replace("_", " ") for t in anomaly_types) or "anomaly"
    parts = [f"incident on {service}: {types}"]
    if root_cause:
        parts.append(f"root cause {root_cause}")
    others = [s for s in related if s and s != service]
    if others:
        parts.append("also affected " + ", ".join(others))
    if summary:
        parts.append(_SPACES.sub(" ", str(summary)).strip())
    return cut(". ".join(parts))


def cut(text: str) -> str:
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 3] + "..."
