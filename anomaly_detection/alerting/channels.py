"""The notification channels: a generic JSON webhook, Slack-compatible webhooks, email over SMTP.

Plain httpx and smtplib rather than a notification library: each send is one
request whose status code and error the notifier records per attempt, with
its own timeout, and tests run against real local receivers.

A channel's `name` is stable across restarts and carries no secret (a Slack
URL's path is its token): the kind, the host and a short hash of the address.
"""

from __future__ import annotations

import hashlib
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import urlparse

import httpx

from anomaly_detection.alerting.events import text
from observability.settings import Settings

USER_AGENT = "observability-notifier/1"


@dataclass(frozen=True)
class Result:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _name(kind: str, address: str) -> str:
    host = urlparse(address).hostname or address
    return f"{kind}:{host}#{hashlib.sha256(address.encode()).hexdigest()[:8]}"


class HttpChannel:
    """POST one JSON body per notification; any 2xx is delivered, anything else (or no answer) failed."""

    kind = "webhook"

    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url
        self.client = client
        self.name = _name(self.kind, url)

    def body(self, payload: dict) -> dict:
        return payload

    def send(self, payload: dict) -> Result:
        t0 = time.perf_counter()
        try:
            r = self.client.post(self.url, json=self.body(payload), headers={"Idempotency-Key": payload["id"]})
        except httpx.HTTPError as exc:
            return Result(False, None, f"{type(exc).__name__}: {exc}"[:500], _ms(t0))
        if 200 <= r.status_code < 300:
            return Result(True, r.status_code, None, _ms(t0))
        return Result(False, r.status_code, f"HTTP {r.status_code}: {r.text[:300]}", _ms(t0))


class SlackChannel(HttpChannel):
    """A Slack (or Mattermost, Rocket.Chat...) incoming webhook: `{"text": ...}` in mrkdwn."""

    kind = "slack"

    def body(self, payload: dict) -> dict:
        title, _, rest = text(payload).partition("\n")
        return {"text": f"*{title}*\n{rest}"}


class EmailChannel:
    """One email per notification through an SMTP server; the Message-ID derives from the event id."""

    kind = "email"

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.recipients = _split(s.alert_email_to)
        self.name = f"email:{s.alert_smtp_host}#{hashlib.sha256(','.join(self.recipients).encode()).hexdigest()[:8]}"

    def message(self, payload: dict) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = payload["title"]
        msg["From"] = self.s.alert_email_from
        msg["To"] = ", ".join(self.recipients)
        msg["Message-ID"] = make_msgid(idstring=hashlib.sha256(payload["id"].encode()).hexdigest()[:16])
        msg["X-Alert-Id"] = payload["id"]
        msg.set_content(text(payload))
        return msg

    def send(self, payload: dict) -> Result:
        t0 = time.perf_counter()
        s = self.s
        try:
            with smtplib.SMTP(s.alert_smtp_host, s.alert_smtp_port, timeout=s.alert_timeout_seconds) as smtp:
                if s.alert_smtp_starttls:
                    smtp.starttls()
                if s.alert_smtp_user:
                    smtp.login(s.alert_smtp_user, s.alert_smtp_password)
                refused = smtp.send_message(self.message(payload))
        except smtplib.SMTPResponseException as exc:
            return Result(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:500], _ms(t0))
        except (smtplib.SMTPException, OSError) as exc:
            return Result(False, None, f"{type(exc).__name__}: {exc}"[:500], _ms(t0))
        if refused:
            return Result(False, None, f"refused recipients: {sorted(refused)}"[:500], _ms(t0))
        return Result(True, 250, None, _ms(t0))


def configured(s: Settings, client: httpx.Client) -> list:
    """Every channel the settings turn on, in a stable order."""
    channels: list = [HttpChannel(u, client) for u in _split(s.alert_webhook_urls)]
    channels += [SlackChannel(u, client) for u in _split(s.alert_slack_webhook_urls)]
    if s.alert_smtp_host and _split(s.alert_email_to):
        channels.append(EmailChannel(s))
    return channels


def http_client(s: Settings) -> httpx.Client:
    return httpx.Client(timeout=s.alert_timeout_seconds, headers={"User-Agent": USER_AGENT}, follow_redirects=False)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
