"""Replayed history on the dashboard: any range through `?from=..&to=..`, and an
empty range that says when the newest data is and jumps there (issue 15's bug:
after replaying a morning of last March the overview only said "No service
metrics in the last 6 hours yet ... start the platform with make local")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.dashboard_fixtures import panel_points, time_series_payloads
from tests.seeding import seed_incident, seed_metrics

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
DAY = datetime(2026, 3, 2)
SERVICES = ("checkout", "payments", "search")
MORNING = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T06:00:00Z"}


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def replayed(store):
    """Six hours of 2026-03-02 (00:00-06:00), as a replay of that morning leaves them,
    with a payments incident from 04:00 to 04:10."""
    seed_metrics(store, services=SERVICES, start=DAY, minutes=360, incident=("payments", 240, 249))
    return seed_incident(
        store, "payments", DAY + timedelta(hours=4), minutes=10, severity="critical", root_cause="payments"
    )


def open_app(params: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def points(at: AppTest) -> dict[str, int]:
    """service -> buckets with a request rate on the overview's panels ({} when none are drawn)."""
    payloads = time_series_payloads(at)
    return panel_points(payloads[0], "requests") if payloads else {}


def test_url_range_shows_a_replayed_morning(replayed):
    at = open_app(MORNING)
    assert at.text_input(key="from").value == MORNING["from"]
    assert at.selectbox(key="range").value == "custom"
    [panels] = time_series_payloads(at)
    assert points(at) == {s: 360 for s in SERVICES}  # 1-minute buckets over 6 h
    assert any("2026-03-02 00:00 to 06:00 UTC, 1-minute buckets" in c.value for c in at.caption)
    [incident] = panels["incidents"]  # the 04:00 incident, shaded
    assert incident["x0"] == int(datetime(2026, 3, 2, 4, 0, tzinfo=UTC).timestamp())

    # epoch milliseconds and a wider range: 5-minute buckets
    at = open_app({"from": "1772409600000", "to": "2026-03-03T00:00:00Z"})
    assert points(at) == {s: 72 for s in SERVICES}  # 6 h of data in 5-minute buckets
    assert any("5-minute buckets" in c.value for c in at.caption)


def test_empty_live_range_names_the_newest_data_and_jumps_there(replayed):
    at = open_app()
    assert not time_series_payloads(at)
    info = next(i.value for i in at.info if "No service metrics" in i.value)
    assert info.startswith("No service metrics in the last 6 hours.")
    assert "The newest data is at 2026-03-02 05:59 UTC" in info
    assert "make local" not in info  # there is data: the hint to start the platform would mislead

    at.button(key="jump_overview").click().run()
    assert not at.exception
    assert at.text_input(key="from").value == MORNING["from"]
    assert at.text_input(key="to").value == MORNING["to"]
    assert at.query_params["from"] == MORNING["from"]  # the URL carries it: the view can be shared
    assert points(at) == {s: 360 for s in SERVICES}

    # the range stays when moving to another page (the sidebar's fields are on every page)
    at.switch_page("views/incidents.py").run()
    assert at.selectbox(key="incident_id").value == replayed
    at.switch_page("views/anomalies.py").run()
    assert len(at.dataframe[0].value) == 10


def test_other_pages_read_the_url_range(replayed):
    at = open_app(MORNING, "incidents")
    assert at.selectbox(key="incident_id").value == replayed
    at = open_app(MORNING, "anomalies")
    assert {m.label: m.value for m in at.metric}["Anomalies shown"] == "10"
    # an evening of the same day has none: the page offers the morning's newest anomaly
    at = open_app({"from": "2026-03-02T18:00:00Z", "to": "2026-03-02T20:00:00Z"}, "anomalies")
    assert any("The newest data is at 2026-03-02 04:09 UTC, before this range." in i.value for i in at.info)
    at.button(key="jump_anomalies").click().run()
    assert at.text_input(key="from").value == "2026-03-02T02:10:00Z"
    assert {m.label: m.value for m in at.metric}["Anomalies shown"] == "10"


def test_presets_and_unreadable_ranges(replayed):
    at = open_app(MORNING)
    at.selectbox(key="range").set_value("7d").run()  # a preset replaces the absolute range
    assert at.text_input(key="from").value == "now-7d" and at.text_input(key="to").value == "now"
    assert any("Last 7 days" in c.value for c in at.caption)

    # the date-time picker: two absolute times, applied as ISO from/to
    at.datetime_input(key="range_pick_start").set_value(datetime(2026, 3, 2, 3, 0))
    at.datetime_input(key="range_pick_end").set_value(datetime(2026, 3, 2, 5, 0))
    submit = next(b for b in at.button if b.label == "Apply")
    submit.click().run()
    assert not at.exception
    assert (at.text_input(key="from").value, at.text_input(key="to").value) == (
        "2026-03-02T03:00:00Z",
        "2026-03-02T05:00:00Z",
    )
    assert points(at) == {s: 120 for s in SERVICES}

    # an old ?range=7d link (the bench's, bookmarks) still opens that preset
    at = open_app({"range": "7d"})
    assert (at.text_input(key="from").value, at.selectbox(key="range").value) == ("now-7d", "7d")

    at = open_app({"from": "yesterday"})
    assert not at.exception
    assert any("cannot read time 'yesterday'" in e.value for e in at.error)
    assert at.info  # the page falls back to the default range, and says it is empty


def test_a_link_with_its_own_range_wins_over_the_session_range(replayed):
    """st.page_link(..., query_params={"from": .., "to": ..}) from another page (an incident's time)."""
    at = open_app()
    assert any("No service metrics in the last 6 hours." in i.value for i in at.info)
    at.query_params["from"], at.query_params["to"] = MORNING["from"], MORNING["to"]
    at.switch_page("views/anomalies.py").run()
    assert not at.exception
    assert at.text_input(key="from").value == MORNING["from"]
    assert {m.label: m.value for m in at.metric}["Anomalies shown"] == "10"
