"""One notifier cycle: derive new incident and forecast events, record them, deliver what is due."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from anomaly_detection.alerting import channels as channel_mod
from anomaly_detection.alerting import delivery, events, forecast_events
from observability import metrics, tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store, utcnow

log = get_logger(__name__)


@dataclass
class CycleResult:
    events: int = 0  # new events recorded this cycle
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    held: int = 0

    def line(self) -> str:
        return (
            f"notifier summary: events={self.events} sent={self.sent} failed={self.failed} "
            f"gave_up={self.gave_up} pending={self.held + self.failed}"
        )


def dashboard_url(s: Settings) -> str:
    if s.alert_dashboard_url:
        return s.alert_dashboard_url
    host = "127.0.0.1" if s.dashboard_host in ("0.0.0.0", "") else s.dashboard_host
    return f"http://{host}:{s.dashboard_port}"


def count_attempt(channel: str, outcome: str, _result) -> None:
    metrics.ALERT_DELIVERIES.labels(channel.split(":", 1)[0], outcome).inc()


class NotifierService:
    def __init__(self, settings: Settings, store: Store | None = None, on_attempt=None) -> None:
        self.s = settings
        self.store = store or Store.from_settings(settings)
        self.client = channel_mod.http_client(settings)
        self.channels = {c.name: c for c in channel_mod.configured(settings, self.client)}
        self.on_attempt = on_attempt or count_attempt
        self._migrated = False
        if not self.channels:
            log.warning("no alert channel configured: events are recorded, nothing is sent")

    def derive(self) -> int:
        now = utcnow()
        new = self.incident_events(now)
        if self.s.alert_forecasts:
            new += forecast_events.pending_events(self.store, now, dashboard_url(self.s))
        recorded = events.record(self.store, new, sorted(self.channels), now)
        if recorded:
            log.info("alert events recorded", events=recorded, kinds=sorted({e.event for e in new}))
        return recorded

    def incident_events(self, now) -> list[events.AlertEvent]:
        incidents = events.candidate_incidents(self.store, now, timedelta(minutes=self.s.alert_lookback_minutes))
        if incidents.empty:
            return []
        ids = incidents["id"].tolist()
        return events.derive(
            incidents,
            events.latest_summaries(self.store, ids),
            events.notified_state(self.store, ids),
            min_severity=self.s.alert_min_severity,
            repeat=timedelta(minutes=self.s.alert_repeat_minutes) if self.s.alert_repeat_minutes else None,
            now=now,
            dashboard_url=dashboard_url(self.s),
            quiet=delivery.quiet_now(self.s, now),
        )

    def run_once(self) -> CycleResult:
        if not self._migrated:  # its own tables may be newer than the file (an upgrade)
            self.store.migrate()
            self._migrated = True
        result = CycleResult(events=self.derive())
        p = delivery.deliver_pending(self.store, self.s, self.channels, on_attempt=self.on_attempt)
        result.sent, result.failed, result.gave_up, result.held = p.sent, p.failed, p.gave_up, p.held
        return result

    def observe(self, r: CycleResult) -> None:
        """The cycle's figures as metrics (the loop calls it after each cycle)."""
        metrics.record_batch(metrics.NOTIFIER, kind="incident_event", rows_in=r.events)
        metrics.BACKLOG.labels(metrics.NOTIFIER).set(r.held + r.failed)

    def heartbeat(self) -> None:
        self.store.heartbeat(tables.NOTIFIER_HEARTBEAT, f"channels={len(self.channels)}")

    def close(self) -> None:
        self.client.close()
