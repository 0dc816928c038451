"""Dead-letter records: a rejected input with the reason it was rejected.

Producers (replay, generator) publish these to the dead-letter topic; the
Spark job ingests that topic, together with its own parse rejects, into the
DuckDB table `dead_letter(received_at, source, reason, payload)`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

MAX_PAYLOAD_CHARS = 64 * 1024  # keep the evidence, not a 1 MiB blob per row


def make_dead_letter(
    source: str, reason: str, payload: bytes | str | None, received_at: datetime | None = None
) -> bytes:
    """Encode one dead letter as the JSON value published to the dead-letter topic."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="backslashreplace")
    if payload is not None and len(payload) > MAX_PAYLOAD_CHARS:
        payload = payload[:MAX_PAYLOAD_CHARS] + f"...[truncated, {len(payload)} chars]"
    when = received_at or datetime.now(UTC)
    return json.dumps(
        {
            "received_at": when.astimezone(UTC).isoformat(),
            "source": source,
            "reason": reason,
            "payload": payload,
        },
        ensure_ascii=False,
    ).encode("utf-8")


def parse_dead_letter(value: bytes) -> dict:
    """Decode a dead-letter topic value -> {received_at (naive UTC), source, reason, payload}."""
    obj = json.loads(value)
    ts = datetime.fromisoformat(obj["received_at"])
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return {"received_at": ts, "source": obj["source"], "reason": obj["reason"], "payload": obj.get("payload")}
