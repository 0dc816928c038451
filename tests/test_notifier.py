"""The notifier against real local receivers (HTTP webhook and Slack-style, SMTP) and a real DuckDB file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from anomaly_detection.alerting import delivery
from anomaly_detection.alerting.service import NotifierService
from observability import tables
from observability.store import utcnow
from tests.alert_receivers import start_receiver, stop_receiver
from tests.prometheus_scrape import free_port, scrape, value

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [
    {"service": "payments", "score": 0.91, "evidence": "error spans start here"},
    {"service": "checkout", "score": 0.4, "evidence": "caller"},
]


@pytest.fixture
def hook():
    rec = start_receiver()
    yield rec
    stop_receiver(rec)


@pytest.fixture
def slack():
    rec = start_receiver()
    yield rec
    stop_receiver(rec)


def alert_settings(settings, **over):
    base = {"alert_retry_seconds": 0.05, "alert_retry_max_seconds": 0.2, "alert_timeout_seconds": 2.0}
    return settings.model_copy(update={**base, **over})


def put_incident(store, iid, *, status="open", severity="medium", service="checkout", updated_at=None, started=None):
    """Write (or rewrite, as the detector does) one incident row."""
    started = started or utcnow() - timedelta(minutes=5)
    store.execute(
        f"""INSERT OR REPLACE INTO {tables.INCIDENTS} (id, service, started_at, ended_at, status, peak_severity,
            root_cause_service, related_services, updated_at, root_cause_candidates)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            iid,
            service,
            started,
            utcnow() if status == "resolved" else None,
            status,
            severity,
            "payments",
            ["payments"],
            updated_at or utcnow(),
            json.dumps(CANDIDATES),
        ],
    )


def put_summary(store, iid, text="Payments errors broke checkout."):
    store.execute(
        f"""INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by, facts)
            VALUES (?, ?, 'checkout', ?, ?, 'llm', '{{}}')""",
        [f"s-{iid}-{time.monotonic_ns()}", iid, utcnow(), text],
    )


def deliveries(store) -> list[tuple]:
    return store.fetch_all(
        f"SELECT event_id, channel, attempt, outcome, status_code, error FROM {tables.ALERT_DELIVERIES} "
        "ORDER BY attempted_at, attempt"
    )


def test_lifecycle_sends_each_event_once_to_every_channel(store, settings, hook, slack):
    s = alert_settings(settings, alert_webhook_urls=hook.url, alert_slack_webhook_urls=slack.url)
    svc = NotifierService(s, store)
    put_incident(store, "inc-1", severity="medium")
    put_incident(store, "inc-low", severity="low", service="search")  # below ALERT_MIN_SEVERITY: silent
    assert svc.run_once().sent == 2
    put_incident(store, "inc-1", severity="critical")
    svc.run_once()
    put_summary(store, "inc-1")
    svc.run_once()
    put_incident(store, "inc-1", severity="critical", status="resolved")
    svc.run_once()
    again = svc.run_once()  # nothing changed: nothing new
    svc.close()

    got = hook.delivered()
    assert [b["id"] for b in got] == ["inc-1|opened", "inc-1|escalated|critical", "inc-1|summarised", "inc-1|resolved"]
    assert (again.events, again.sent) == (0, 0)
    opened, _, summarised, resolved = got
    assert opened["incident"]["severity"] == "medium" and opened["incident"]["status"] == "open"
    assert opened["root_cause_candidates"] == CANDIDATES
    assert opened["summary"] is None and opened["dashboard_url"].endswith("/incidents?incident=inc-1")
    assert summarised["summary"]["text"] == "Payments errors broke checkout."
    assert resolved["incident"]["status"] == "resolved" and resolved["incident"]["ended_at"]
    assert hook.received[0].headers["Idempotency-Key"] == "inc-1|opened"
    texts = [b["text"] for b in slack.delivered()]
    assert len(texts) == 4 and texts[0].startswith("*[MEDIUM] checkout: incident opened*")
    assert "likely root cause: payments (0.91)" in texts[0] and "Payments errors broke checkout." in texts[2]
    outcomes = {r[3] for r in deliveries(store)}
    assert outcomes == {"sent"} and len(deliveries(store)) == 8


def put_risk(store, service, metric="p99_latency_ms", *, at_risk=True, probability=0.8):
    """Write one sla_risk row as a forecaster run does (it replaces the assessment each run)."""
    store.execute(
        f"""INSERT OR REPLACE INTO {tables.SLA_RISK} (service, metric, sla, sla_source, probability, crossing_time,
            predicted_peak, at_risk, made_at) VALUES (?, ?, 800.0, 'configured', ?, ?, ?, ?, ?)""",
        [service, metric, probability, utcnow() + timedelta(minutes=25) if at_risk else None, 950.0, at_risk, utcnow()],
    )


def test_sla_risk_sends_one_forecast_per_episode(store, settings, hook, slack):
    s = alert_settings(settings, alert_webhook_urls=hook.url, alert_slack_webhook_urls=slack.url)
    put_risk(store, "search", at_risk=False, probability=0.1)  # assessed, not at risk: silent
    put_risk(store, "checkout")
    off = NotifierService(s.model_copy(update={"alert_forecasts": False}), store)
    assert off.run_once().events == 0  # ALERT_FORECASTS=false: no forecast notifications
    off.close()

    svc = NotifierService(s, store)
    assert svc.run_once().sent == 2  # the webhook and the Slack hook
    put_risk(store, "checkout", probability=0.9)  # the forecaster refreshed it, still at risk
    assert (svc.run_once().events, svc.run_once().sent) == (0, 0)
    svc.close()
    restarted = NotifierService(s, store)
    assert restarted.run_once().events == 0  # a restart sends nothing again
    put_risk(store, "checkout", at_risk=False, probability=0.2)  # the risk cleared
    cleared = restarted.run_once()
    assert (cleared.events, cleared.sent) == (1, 0)  # recorded, sent nowhere
    put_risk(store, "checkout", probability=0.7)  # and returned: a new episode
    assert restarted.run_once().sent == 2
    restarted.close()

    got = hook.delivered()
    assert [b["id"] for b in got] == [
        "forecast:checkout:p99_latency_ms|forecast|1",
        "forecast:checkout:p99_latency_ms|forecast|2",
    ]
    first = got[0]
    assert first["event"] == "forecast" and first["incident"] is None
    assert first["forecast"]["service"] == "checkout" and first["forecast"]["probability"] == 0.8
    assert first["forecast"]["sla"] == 800.0 and first["forecast"]["crossing_time"]
    assert first["title"] == "[LOW] checkout: p99_latency_ms forecast to cross its SLA"
    texts = [b["text"] for b in slack.delivered()]
    assert texts[0].startswith("*[LOW] checkout: p99_latency_ms forecast to cross its SLA*")
    assert "80% chance of crossing the configured SLA 800" in texts[0] and "70% chance" in texts[1]
    assert [r[3] for r in deliveries(store)] == ["sent"] * 4


def test_failure_and_hang_are_retried_until_the_receiver_recovers(store, settings, hook):
    s = alert_settings(settings, alert_webhook_urls=hook.url, alert_timeout_seconds=0.5)
    hook.script.extend(["fail", "hang"])
    svc = NotifierService(s, store)
    put_incident(store, "inc-2", severity="high")
    put_summary(store, "inc-2")
    deadline = time.monotonic() + 20
    while len(hook.delivered()) < 2 and time.monotonic() < deadline:
        svc.run_once()
        time.sleep(0.05)
    svc.close()

    assert [b["id"] for b in hook.delivered()] == ["inc-2|opened", "inc-2|summarised"]  # in order, once each
    rows = deliveries(store)
    first = [r for r in rows if r[0] == "inc-2|opened"]
    assert [(r[2], r[3], r[4]) for r in first[:2]] == [(1, "failed", 500), (2, "failed", None)]
    assert "HTTP 500" in first[0][5] and "Timeout" in first[1][5]
    assert first[-1][3] == "sent" and [r[3] for r in rows if r[0] == "inc-2|summarised"] == ["sent"]


def test_gives_up_after_max_attempts_and_records_it(store, settings, hook):
    s = alert_settings(settings, alert_webhook_urls=hook.url, alert_max_attempts=2, alert_retry_seconds=0.01)
    hook.script.extend(["fail"] * 5)
    svc = NotifierService(s, store)
    put_incident(store, "inc-3", severity="high")
    deadline = time.monotonic() + 10
    while [r[3] for r in deliveries(store)][-1:] != ["gave_up"] and time.monotonic() < deadline:
        svc.run_once()
        time.sleep(0.02)
    svc.run_once()
    svc.close()
    assert [(r[2], r[3]) for r in deliveries(store)] == [(1, "failed"), (2, "gave_up")]


def test_quiet_hours_hold_non_critical_until_they_end(store, settings, hook):
    now = utcnow()
    window = f"{(now - timedelta(hours=1)):%H:00}-{(now + timedelta(hours=2)):%H:00}"
    quiet = alert_settings(settings, alert_webhook_urls=hook.url, alert_quiet_hours=window)
    assert delivery.quiet_now(quiet, now)
    put_incident(store, "inc-q", severity="high")
    put_incident(store, "inc-c", severity="critical", service="payments")
    svc = NotifierService(quiet, store)
    r = svc.run_once()
    svc.close()
    assert [b["id"] for b in hook.delivered()] == ["inc-c|opened"] and r.held == 1
    loud = NotifierService(alert_settings(settings, alert_webhook_urls=hook.url), store)
    loud.run_once()
    loud.close()
    assert [b["id"] for b in hook.delivered()] == ["inc-c|opened", "inc-q|opened"]


@pytest.mark.parametrize(
    ("hours", "at", "quiet"),
    [("22:00-07:00", "23:30", True), ("22:00-07:00", "06:59", True), ("22:00-07:00", "07:00", False),
     ("09:00-17:00", "12:00", True), ("09:00-17:00", "08:00", False)],
)  # fmt: skip
def test_quiet_hours_window(settings, hours, at, quiet):
    s = settings.model_copy(update={"alert_quiet_hours": hours})
    assert delivery.quiet_now(s, datetime.fromisoformat(f"2026-01-05T{at}")) is quiet


def test_quiet_hours_read_in_the_configured_timezone(settings):
    s = settings.model_copy(update={"alert_quiet_hours": "22:00-07:00", "alert_timezone": "Europe/Berlin"})
    assert delivery.quiet_now(s, datetime(2026, 1, 5, 21, 30))  # 22:30 in Berlin
    assert not delivery.quiet_now(s, datetime(2026, 1, 5, 6, 30))  # 07:30 in Berlin


def test_reminder_while_open_and_history_stays_silent(store, settings, hook):
    s = alert_settings(settings, alert_webhook_urls=hook.url, alert_repeat_minutes=0.002)  # 0.12 s
    put_incident(
        store, "inc-old", status="resolved", severity="high", updated_at=utcnow() - timedelta(hours=3)
    )  # resolved before the notifier ever ran: history
    put_incident(store, "inc-r", severity="high")
    svc = NotifierService(s, store)
    svc.run_once()
    hook.wait_for(lambda: len(hook.delivered()) == 1)
    deadline = time.monotonic() + 10
    while len(hook.delivered()) < 2 and time.monotonic() < deadline:
        svc.run_once()
        time.sleep(0.05)
    svc.close()
    assert [b["id"] for b in hook.delivered()] == ["inc-r|opened", "inc-r|reminder|1"]


def test_email_through_a_real_smtp_server(store, settings):
    from aiosmtpd.controller import Controller

    class Collect:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    handler = Collect()
    with socket.socket() as probe:  # aiosmtpd's start() connects to its port: it must be a real one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(handler, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        s = alert_settings(
            settings, alert_smtp_host="127.0.0.1", alert_smtp_port=port, alert_email_to="oncall@example.com, b@x.org"
        )
        put_incident(store, "inc-m", severity="high")
        svc = NotifierService(s, store)
        assert svc.run_once().sent == 1
        svc.close()
    finally:
        smtp.stop()
    [(rcpts, content)] = handler.messages
    assert rcpts == ["oncall@example.com", "b@x.org"]
    assert "Subject: [HIGH] checkout: incident opened" in content and "X-Alert-Id: inc-m|opened" in content
    assert "likely root cause: payments (0.91)" in content


def test_restart_mid_delivery_sends_nothing_twice_and_loses_nothing(store, settings, hook, data_dir):
    """Kill -9 the notifier while a webhook hangs; the restarted one sends the rest, none again."""
    for i in range(5):
        put_incident(
            store, f"inc-k{i}", severity="high", service=f"svc{i}", started=utcnow() - timedelta(minutes=10 - i)
        )
    hook.script.extend(["ok", "ok", "hang"])
    metrics_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(data_dir),
        "ALERT_WEBHOOK_URLS": hook.url,
        "ALERT_TIMEOUT_SECONDS": "30",
        "ALERT_INTERVAL_SECONDS": "0.2",
        "METRICS_PORT_NOTIFIER": str(metrics_port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "anomaly_detection.notifier"], cwd=ROOT, env=env)
    try:
        hook.wait_for(hook.hanging.is_set, timeout=60)
        samples = scrape(metrics_port)  # its /metrics (Prometheus' parser), counted live while the third hangs
        assert value(samples, "observability_alert_deliveries_total", channel="webhook", outcome="sent") == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    hook.release.set()  # the hung request ends without a response
    hook.wait_for(lambda: len(hook.received) == 3)
    assert len(hook.delivered()) == 2
    done = subprocess.run(
        [sys.executable, "-m", "anomaly_detection.notifier", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "sent=3 failed=0" in done.stdout
    ids = [b["id"] for b in hook.delivered()]
    assert sorted(ids) == sorted(f"inc-k{i}|opened" for i in range(5))  # each once: nothing twice, nothing lost
    assert ids == [f"inc-k{i}|opened" for i in range(5)]  # and in order


def test_health_page_shows_failed_deliveries(store, settings, hook):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    hook.script.append("fail")
    put_incident(store, "inc-h", severity="high")
    svc = NotifierService(alert_settings(settings, alert_webhook_urls=hook.url), store)
    svc.run_once()
    svc.close()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    at.switch_page("views/health.py").run()
    assert not at.exception, [e.value for e in at.exception]
    by_cols = {tuple(d.value.columns)[:2]: d.value for d in at.dataframe}
    channels = by_cols[("channel", "sent")]
    assert channels.iloc[0]["failed"] == 1 and "HTTP 500" in channels.iloc[0]["last_error"]
    failures = by_cols[("attempted_at", "channel")]
    assert list(failures["event"]) == ["opened"] and list(failures["status_code"]) == [500]
    st.cache_data.clear()


def test_retention_keeps_the_record_of_kept_incidents_and_drops_that_of_expired_ones(store, settings, hook):
    from observability.quality import delete_expired_rows

    svc = NotifierService(alert_settings(settings, alert_webhook_urls=hook.url), store)
    put_incident(
        store, "inc-keep", severity="high", updated_at=utcnow() + timedelta(hours=1)
    )  # changed after the cutoff
    put_incident(store, "inc-gone", severity="high", service="payments")
    svc.run_once()
    deleted = delete_expired_rows(store, utcnow() + timedelta(seconds=1))
    assert (deleted[tables.ALERT_EVENTS], deleted[tables.ALERT_DELIVERIES]) == (1, 1)
    assert [r[0] for r in deliveries(store)] == ["inc-keep|opened"]
    assert svc.run_once().sent == 0  # the kept incident's record still stops a second notification
    svc.close()
    assert len(hook.delivered()) == 2


def test_retention_keeps_an_open_forecast_episode_so_it_is_not_sent_again(store, settings, hook):
    from observability.quality import delete_expired_rows

    svc = NotifierService(alert_settings(settings, alert_webhook_urls=hook.url), store)
    put_risk(store, "checkout")
    svc.run_once()
    put_risk(store, "checkout", at_risk=False)
    svc.run_once()  # episode 1 cleared
    put_risk(store, "checkout")
    svc.run_once()  # episode 2 open
    deleted = delete_expired_rows(store, utcnow() + timedelta(seconds=1))
    assert deleted[tables.ALERT_EVENTS] == 2  # episode 1's forecast and its cleared marker
    assert svc.run_once().events == 0  # the kept newest event: episode 2 is still open
    svc.close()
    assert [b["id"] for b in hook.delivered()] == [f"forecast:checkout:p99_latency_ms|forecast|{n}" for n in (1, 2)]


def test_an_incident_below_the_minimum_opens_when_it_escalates_to_it():
    import pandas as pd

    from anomaly_detection.alerting import events

    now = utcnow()
    row = {
        "id": "i",
        "service": "search",
        "status": "open",
        "peak_severity": "low",
        "started_at": now,
        "ended_at": None,
        "root_cause_service": None,
        "related_services": [],
        "updated_at": now,
        "root_cause_candidates": None,
    }
    kw = {"min_severity": "high", "repeat": None, "now": now, "dashboard_url": "http://d"}
    assert events.derive(pd.DataFrame([row]), {}, {}, **kw) == []
    for sev in ("medium", "high", "critical"):
        row["peak_severity"] = sev
        got = events.derive(pd.DataFrame([row]), {}, {}, **kw)
        assert [e.id for e in got] == ([] if sev == "medium" else ["i|opened"])
    seen = {"i": events.Notified({"opened"}, "high", now)}
    assert [e.id for e in events.derive(pd.DataFrame([row]), {}, seen, **kw)] == ["i|escalated|critical"]
    seen["i"].severity, seen["i"].last_at = "critical", now - timedelta(hours=1)
    remind = {**kw, "repeat": timedelta(minutes=30)}
    assert [e.id for e in events.derive(pd.DataFrame([row]), {}, seen, **remind, quiet=True)] == ["i|reminder|1"]
    row["peak_severity"] = seen["i"].severity = "high"  # below critical: no reminder in quiet hours
    assert events.derive(pd.DataFrame([row]), {}, seen, **remind, quiet=True) == []
    assert [e.id for e in events.derive(pd.DataFrame([row]), {}, seen, **remind)] == ["i|reminder|1"]
    row["status"], row["peak_severity"] = "resolved", "critical"
    seen["i"].events |= {"escalated"}
    seen["i"].severity = "critical"
    assert [e.id for e in events.derive(pd.DataFrame([row]), {}, seen, **kw)] == ["i|resolved"]


def test_once_on_a_database_from_before_its_tables_adds_them(store, data_dir):
    """An upgrade: the file was migrated by an older release (no alert tables, no migration 10)."""
    store.execute(
        f"DROP TABLE {tables.ALERT_DELIVERIES}; DROP TABLE {tables.ALERT_EVENTS}; "
        f"DELETE FROM {tables.SCHEMA_VERSION} WHERE version = 10"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "anomaly_detection.notifier", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "notifier summary: events=0 sent=0 failed=0 gave_up=0 pending=0" in done.stdout
    assert store.schema_version() >= 10
