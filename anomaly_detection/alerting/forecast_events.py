"""Low-severity `forecast` notifications: an SLA the forecaster says is at risk within the hour.

Why episodes recorded in `alert_events`: `sla_risk` holds only the newest
assessment (the forecaster replaces it every few minutes), so it cannot say
whether a risk is new. The notifier keeps that memory itself, keyed like an
incident by `forecast:<service>:<metric>`: a `forecast` event (numbered per
episode, delivered) when the pair turns at risk, and a `forecast_cleared`
marker (recorded, never delivered) once it no longer is. A refreshed forecast
or a restart while the risk lasts therefore derives nothing; a risk that
clears and returns is a new episode and notifies again. Retention keeps the newest
event of each key (observability.quality), so a risk lasting past RETENTION_DAYS
is not notified again either.

`ALERT_FORECASTS` switches them on or off; `ALERT_MIN_SEVERITY` applies to
incidents only (forecasts are `low` by definition and would otherwise be muted
by its default). Quiet hours hold them like any event below critical.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from anomaly_detection.alerting.events import AlertEvent, event_id
from observability import forecasts, tables
from observability.store import Store

FORECAST, FORECAST_CLEARED = "forecast", "forecast_cleared"
FORECAST_SEVERITY = "low"
KEY_PREFIX = tables.ALERT_FORECAST_KEY_PREFIX


@dataclass(frozen=True)
class Episode:
    """The newest recorded forecast event of one (service, metric)."""

    number: int  # of the newest `forecast` event (0: none yet)
    open: bool  # the newest event is a `forecast`, not its `forecast_cleared`


def risk_key(service: str, metric: str) -> str:
    return f"{KEY_PREFIX}{service}:{metric}"


def episodes(store: Store) -> dict[str, Episode]:
    """risk key -> its newest episode, from what `alert_events` holds."""
    rows = store.fetch_all(
        f"""SELECT incident_id, event, id FROM {tables.ALERT_EVENTS}
            WHERE event IN ('{FORECAST}', '{FORECAST_CLEARED}') ORDER BY seq"""
    )
    out: dict[str, Episode] = {}
    for key, event, eid in rows:
        number = int(eid.rsplit("|", 1)[1])
        out[key] = Episode(max(number, out[key].number if key in out else 0), event == FORECAST)
    return out


def derive(risks: pd.DataFrame, seen: dict[str, Episode], now: datetime, dashboard_url: str) -> list[AlertEvent]:
    """New episodes of the at-risk rows, and a cleared marker for each open episode no longer at risk (pure)."""
    out: list[AlertEvent] = []
    current = set()
    for risk in risks.to_dict("records"):
        key = risk_key(risk["service"], risk["metric"])
        current.add(key)
        ep = seen.get(key, Episode(0, False))
        if not ep.open:
            eid = event_id(key, FORECAST, ep.number + 1)
            out.append(AlertEvent(eid, key, FORECAST, FORECAST_SEVERITY, build_payload(eid, risk, now, dashboard_url)))
    for key, ep in sorted(seen.items()):
        if ep.open and key not in current:
            eid = event_id(key, FORECAST_CLEARED, ep.number)
            out.append(AlertEvent(eid, key, FORECAST_CLEARED, FORECAST_SEVERITY, {"id": eid}, deliver=False))
    return out


def pending_events(store: Store, now: datetime, dashboard_url: str) -> list[AlertEvent]:
    return derive(forecasts.at_risk(store), episodes(store), now, dashboard_url)


def build_payload(eid: str, risk: dict, now: datetime, dashboard_url: str) -> dict:
    """The generic webhook body of a forecast: the risk row, no incident, a link to the overview's SLA panel."""
    return {
        "id": eid,
        "event": FORECAST,
        "created_at": _iso(now),
        "title": f"[{FORECAST_SEVERITY.upper()}] {risk['service']}: {risk['metric']} forecast to cross its SLA",
        "incident": None,
        "forecast": {
            "service": risk["service"],
            "metric": risk["metric"],
            "sla": float(risk["sla"]),
            "sla_source": risk["sla_source"],
            "probability": float(risk["probability"]),
            "crossing_time": _iso(risk["crossing_time"]),
            "predicted_peak": float(risk["predicted_peak"]),
            "made_at": _iso(risk["made_at"]),
        },
        "root_cause_candidates": [],
        "summary": None,
        "dashboard_url": f"{dashboard_url.rstrip('/')}/",
    }


def text(payload: dict) -> str:
    """Plain text of a forecast notification (Slack and email)."""
    f = payload["forecast"]
    when = f" (first at {f['crossing_time']} UTC)" if f["crossing_time"] else ""
    return "\n".join(
        [
            payload["title"],
            f"{f['probability']:.0%} chance of crossing the {f['sla_source']} SLA {f['sla']:g} "
            f"within the hour{when}; predicted peak {f['predicted_peak']:g}",
            "",
            payload["dashboard_url"],
        ]
    )


def _iso(value) -> str | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).isoformat()
