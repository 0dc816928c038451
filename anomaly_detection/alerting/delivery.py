"""Delivery: at least once per (event, channel), retried with backoff, every attempt recorded.

A (event, channel) pair is done once an attempt is recorded `sent` (or
`gave_up` after `ALERT_MAX_ATTEMPTS`); until then it is due when it has no
attempt yet, or when the wait after its last failed one is over
(`ALERT_RETRY_SECONDS * 2**(failures-1)`, at most `ALERT_RETRY_MAX_SECONDS`).
Each attempt is recorded right after it returns, before the next is sent, so a
process killed mid-delivery resends at most the one notification in flight
(its `id` / `Idempotency-Key` / Message-ID lets the receiver drop that
duplicate).

Order: per incident and channel, an event waits behind an earlier one not yet
delivered. A channel that fails is skipped for the rest of the pass, so a
hanging receiver costs one timeout per pass, not one per notification.
Quiet hours hold (never drop) everything below critical until they end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from anomaly_detection.alerting.channels import Result
from observability import tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store, utcnow

log = get_logger(__name__)
SENT, FAILED, GAVE_UP = "sent", "failed", "gave_up"
QUIET_BYPASS_SEVERITY = "critical"


@dataclass(frozen=True)
class Pending:
    event_id: str
    incident_id: str
    channel: str
    severity: str
    payload: dict
    attempts: int
    last_attempt_at: datetime | None


@dataclass
class PassResult:
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    held: int = 0  # quiet hours, waiting for a retry, or behind an earlier event


def pending(store: Store) -> list[Pending]:
    """Every (event, channel) not yet done, in delivery order."""
    rows = store.fetch_all(
        f"""WITH targets AS (
                SELECT id, seq, incident_id, severity, payload, unnest(channels) AS channel FROM {tables.ALERT_EVENTS}
            ), tried AS (
                SELECT event_id, channel, count(*) AS attempts, max(attempted_at) AS last_at,
                       bool_or(outcome IN ('{SENT}', '{GAVE_UP}')) AS done
                FROM {tables.ALERT_DELIVERIES} GROUP BY event_id, channel
            )
            SELECT t.id, t.incident_id, t.channel, t.severity, t.payload, coalesce(d.attempts, 0), d.last_at
            FROM targets t LEFT JOIN tried d ON d.event_id = t.id AND d.channel = t.channel
            WHERE NOT coalesce(d.done, false)
            ORDER BY t.seq, t.channel"""
    )
    return [Pending(r[0], r[1], r[2], r[3], json.loads(r[4]), int(r[5]), r[6]) for r in rows]


def retry_wait(s: Settings, failures: int) -> timedelta:
    return timedelta(seconds=min(s.alert_retry_max_seconds, s.alert_retry_seconds * 2 ** max(0, failures - 1)))


def quiet_now(s: Settings, now_utc: datetime) -> bool:
    """Whether `now_utc` (naive UTC) falls in ALERT_QUIET_HOURS, read in ALERT_TIMEZONE."""
    if not s.alert_quiet_hours:
        return False
    start, end = (_hhmm(p) for p in s.alert_quiet_hours.split("-"))
    local = now_utc.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(s.alert_timezone)).time()
    return start <= local < end if start <= end else local >= start or local < end


def _hhmm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h) % 24, int(m))


def record_attempt(store: Store, p: Pending, attempt: int, outcome: str, result: Result, at: datetime) -> None:
    store.execute(
        f"""INSERT INTO {tables.ALERT_DELIVERIES}
            (event_id, channel, attempt, attempted_at, outcome, status_code, error, duration_ms)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        [p.event_id, p.channel, attempt, at, outcome, result.status_code, result.error, result.duration_ms],
    )


def deliver_pending(store: Store, s: Settings, channels: dict, now=utcnow, on_attempt=None) -> PassResult:
    """One pass over what is due; `channels`: name -> channel. `on_attempt(channel, outcome, result)` observes."""
    out = PassResult()
    blocked: set[tuple[str, str]] = set()  # (incident, channel) with an earlier event not delivered
    down: set[str] = set()  # channels that failed in this pass
    quiet = quiet_now(s, now())
    for p in pending(store):
        key = (p.incident_id, p.channel)
        due = p.attempts == 0 or now() >= p.last_attempt_at + retry_wait(s, p.attempts)
        if key in blocked or p.channel in down or not due or (quiet and p.severity != QUIET_BYPASS_SEVERITY):
            blocked.add(key)
            out.held += 1
            continue
        channel = channels.get(p.channel)
        if channel is None:
            result, outcome = Result(False, None, "channel no longer configured"), GAVE_UP
        else:
            result = channel.send(p.payload)
            outcome = SENT if result.ok else GAVE_UP if p.attempts + 1 >= s.alert_max_attempts else FAILED
        record_attempt(store, p, p.attempts + 1, outcome, result, now())
        if on_attempt is not None:
            on_attempt(p.channel, outcome, result)
        if outcome == SENT:
            out.sent += 1
            continue
        if outcome == GAVE_UP:
            out.gave_up += 1
            log.error("notification abandoned", event_id=p.event_id, channel=p.channel, error=result.error)
            continue
        out.failed += 1
        blocked.add(key)
        down.add(p.channel)
        log.warning(
            "notification failed, will retry",
            event_id=p.event_id,
            channel=p.channel,
            attempt=p.attempts + 1,
            error=result.error,
            retry_in_seconds=retry_wait(s, p.attempts + 1).total_seconds(),
        )
    return out
