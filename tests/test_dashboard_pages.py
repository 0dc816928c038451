"""Each dashboard page rendered by Streamlit's AppTest against a real seeded DuckDB."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from observability.store import utcnow
from tests.dashboard_fixtures import (
    LLM_SUMMARY,
    NOVEL_SERVICE,
    SERVICES,
    TEMPLATE_SUMMARY,
    panel_points,
    seed_dashboard,
    time_series_payloads,
)

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Cached loaders are keyed by the DB path, but start every test clean anyway."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def seeded(store, settings):
    return seed_dashboard(store, settings.bronze_dir)


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(v) -> list:
    """A Plotly JSON array: a list, or a typed array ({"dtype", "bdata"}) as Plotly 6+ writes numbers."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def tile_statuses(at: AppTest) -> dict[str, str]:
    """service -> status, read from the tiles' markdown (`**name**  \\n:color-badge[icon status]`)."""
    out = {}
    for m in at.markdown:
        if "-badge[" in m.value:
            name = m.value.split("**")[1].replace("\\", "")
            out[name] = m.value.rsplit(" ", 1)[-1].rstrip("]")
    return out


def test_overview_tiles_status_and_shaded_charts(seeded):
    at = open_page()
    assert at.title[0].value == "Overview"
    statuses = tile_statuses(at)
    assert set(statuses) == set(SERVICES)
    # open incident on payments, root cause database, related checkout
    assert statuses["payments"] == "incident"
    assert statuses["database"] == "incident"
    assert statuses["checkout"] == "degraded"
    assert statuses["search"] == "healthy"  # its incident is resolved and old
    assert statuses[NOVEL_SERVICE] == "healthy"

    [panels] = time_series_payloads(at)  # request rate, error rate, p50, p95, p99 in one component
    assert [p["id"] for p in panels["panels"]] == ["requests", "errors", "p50", "p95", "p99"]
    assert [s["name"] for s in panels["services"]] == sorted(SERVICES)
    assert all(n >= 170 for n in panel_points(panels, "requests").values())  # 180 one-minute windows in 6 h
    assert all(len(vs) == len(panels["x"]) for p in panels["panels"] for vs in p["values"])
    # both incidents in range are shaded (on every panel), and named on the request-rate panel
    assert len(panels["incidents"]) >= 2
    assert {i["label"] for i in panels["incidents"]} >= {"incident: payments", "incident: search"}
    assert all(panels["x_range"][0] <= i["x0"] <= i["x1"] <= panels["x_range"][1] for i in panels["incidents"])
    assert [p["label_incidents"] for p in panels["panels"]] == [True, False, False, False, False]
    # the lines are the stored windows: the p99 panel holds the newest window's p99 per service
    newest = max(panels["x"])
    p99 = next(p for p in panels["panels"] if p["id"] == "p99")
    assert all(vs[panels["x"].index(newest)] > 0 for vs in p99["values"])


def test_overview_service_filter_and_range(seeded):
    at = open_page()
    at.multiselect(key="overview_services").set_value(["payments"]).run()
    assert not at.exception
    assert set(tile_statuses(at)) == {"payments"}
    [panels] = time_series_payloads(at)
    assert [s["name"] for s in panels["services"]] == ["payments"]
    assert all(len(p["values"]) == 1 for p in panels["panels"])

    at.selectbox(key="range").set_value("7d").run()
    assert not at.exception
    assert any("30-minute buckets" in c.value for c in at.caption)
    # 3 h of data in 30-minute buckets: at most 7 points per service
    assert 0 < panel_points(time_series_payloads(at)[0], "requests")["payments"] <= 7


def test_anomalies_timeline_and_filters(seeded):
    at = open_page("anomalies")
    assert charts(at), "timeline chart missing"
    table = at.dataframe[0].value
    assert len(table) == 8 + 5
    assert {m.label: m.value for m in at.metric}["Anomalies shown"] == "13"
    timeline = charts(at)[0]
    assert {t["legendgroup"].split(",")[0] for t in timeline["data"]} == {"critical", "medium"}

    at.multiselect(key="anomaly_severities").set_value(["critical"]).run()
    table = at.dataframe[0].value
    assert len(table) == 8 and set(table["service"]) == {"payments"}
    assert {t["legendgroup"].split(",")[0] for t in charts(at)[0]["data"]} == {"critical"}

    at.multiselect(key="anomaly_types").set_value(["latency_spike"]).run()
    assert not at.dataframe and not charts(at)
    assert any("No anomalies match" in i.value for i in at.info)

    at.multiselect(key="anomaly_severities").set_value([]).run()
    at.multiselect(key="anomaly_services").set_value(["search"]).run()
    table = at.dataframe[0].value
    assert len(table) == 5 and set(table["anomaly_type"]) == {"latency_spike"}


def test_incident_with_template_summary_facts_scores_and_waterfall(seeded):
    at = open_page("incidents")
    assert at.selectbox(key="incident_id").value == seeded.open_incident  # newest first
    text = markdown_text(at)
    assert TEMPLATE_SUMMARY in text
    assert any("Template summary" in w.value for w in at.warning)
    assert "**Likely root cause:** database" in text
    assert "**Related services:** checkout" in text
    facts = at.json[0].value
    assert json.loads(facts)["root_cause_service"] == "database"

    by_key = {c["layout"]["title"]["text"]: c for c in charts(at)}
    detectors = by_key["Detector scores"]["data"][0]
    scores = dict(zip(values(detectors["y"]), values(detectors["x"]), strict=True))
    assert scores == pytest.approx({"rules": 1.0, "robust_stats": 0.8, "isolation_forest": 0.7, "transformer": 0.6})
    baseline = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    row = baseline.set_index("metric").loc["error_rate"]
    assert (row["baseline"], row["observed"]) == (0.01, 0.3)

    # the chosen sample trace is drawn from the bronze events, in call order
    assert at.selectbox(key=f"trace_{seeded.open_incident}").value == seeded.trace_id
    waterfall = by_key["Trace waterfall"]["data"][0]
    assert [label.split(". ", 1)[1] for label in waterfall["y"]] == [
        "checkout /api/checkout",
        "· inventory /api/reserve",
        "· payments /api/pay",
        "· · database SELECT orders",
    ]
    assert values(waterfall["base"]) == pytest.approx([0.0, 5.0, 15.0, 25.0])
    assert values(waterfall["x"]) == pytest.approx([420.0, 8.0, 380.0, 350.0])


def test_incident_error_logs_by_service_window_and_sample_trace(seeded):
    at = open_page("incidents")
    assert at.selectbox(key="incident_id").value == seeded.open_incident
    logs = next(d.value for d in at.dataframe if "body" in d.value.columns)
    assert dict(zip(logs["body"], logs["matched"], strict=True)) == seeded.error_logs
    assert list(logs["timestamp"]) == sorted(logs["timestamp"], reverse=True)  # newest first
    trace_rows = logs[logs["matched"] == "trace"]
    assert list(trace_rows["trace_id"]) == [seeded.trace_id] and list(trace_rows["service"]) == ["inventory"]
    # the resolved search incident has none: an empty state
    at.selectbox(key="incident_id").set_value(seeded.resolved_incident).run()
    assert not at.exception
    assert any("No error logs" in i.value for i in at.info)


def test_incident_link_from_a_notification_opens_that_incident(seeded):
    """The notifier links `…/incidents?incident=<id>`: the page opens on it, not on the newest."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.query_params["incident"] = seeded.resolved_incident
    at.switch_page("views/incidents.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="incident_id").value == seeded.resolved_incident
    assert LLM_SUMMARY in markdown_text(at)
    at.query_params["incident"] = "gone42"  # past the range (or retention): said, and the newest shown
    at.switch_page("views/incidents.py").run()
    assert any("Incident gone42 is not" in i.value for i in at.info)


def test_incident_llm_summary_has_no_template_marker(seeded):
    at = open_page("incidents")
    at.selectbox(key="incident_id").set_value(seeded.resolved_incident).run()
    assert not at.exception
    assert LLM_SUMMARY in markdown_text(at)
    assert not any("Template summary" in w.value for w in at.warning)
    assert any("qwen2.5-coder:0.5b" in c.value for c in at.caption)
    # its sample traces have no bronze events: an empty state, not an error
    assert any("No spans of trace" in i.value for i in at.info)


def test_incident_page_shows_refused_claims_and_similar_past_incidents(seeded, store):
    from datetime import timedelta

    from observability.store import utcnow
    from tests.dashboard_fixtures import _summary_row
    from tests.seeding import seed_incident

    # an earlier payments error surge rooted in database, and an unrelated search incident
    (started,) = store.fetch_one("SELECT started_at FROM incidents WHERE id = ?", [seeded.open_incident])
    earlier = seed_incident(
        store,
        "payments",
        started - timedelta(minutes=50),
        minutes=6,
        anomaly_type="error_surge",
        root_cause="database",
        related=["checkout"],
    )
    facts = {
        "affected_service": "payments",
        "root_cause_service": "database",
        "template_reason": "failed the grounding check twice (similar_incident)",
        "rejected_summaries": [{"attempt": 1, "text": "payments had a traffic_drop; related services: search."}],
        "claim_failures": [
            {
                "attempt": 1,
                "kind": "similar_incident",
                "claim": "traffic_drop",
                "reason": "it names traffic_drop, the type of a similar past incident",
            },
            {
                "attempt": 1,
                "kind": "missing_symptom",
                "claim": "error_surge",
                "reason": "it never states the error rate",
            },
        ],
    }
    row = _summary_row(seeded.open_incident, "payments", "Template again.", "template", facts, None)
    row["created_at"] = utcnow()
    store.insert_df(
        "incident_summaries", pd.DataFrame([row, _summary_row(earlier, "payments", "The earlier one.", "llm", {}, "m")])
    )

    at = open_page("incidents")
    warning = next(w.value for w in at.warning if "Template summary" in w.value)
    assert "failed the grounding check twice \\(similar\\_incident\\)" in warning  # the reason, escaped for markdown
    claims = next(d.value for d in at.dataframe if list(d.value.columns) == ["kind", "claim", "reason"])
    assert list(claims["kind"]) == ["similar_incident", "missing_symptom"]
    assert "payments had a traffic_drop; related services: search." in markdown_text(at)
    similar = next(d.value for d in at.dataframe if "shared" in d.value.columns)
    assert list(similar["summary"]) == ["The earlier one."]  # not the search incident: it shares nothing
    assert similar.iloc[0]["minutes"] == 6 and similar.iloc[0]["anomaly_types"] == "error_surge"
    assert "service payments" in similar.iloc[0]["shared"] and "root cause database" in similar.iloc[0]["shared"]


def test_health_page(seeded):
    at = open_page("health")
    metrics = {m.label: m.value for m in at.metric}
    lag = metrics["Lag (now − newest event time)"]
    # newest event 70 s before the (minute-rounded) seeding time, so 70 s plus what has passed since:
    # bounded by the clock, not by a fixed window (the rounding alone takes up to 59 s of one)
    shown = re.fullmatch(r"(?:(\d+) min )?(\d+) s", lag)
    assert shown, lag
    since = (utcnow() - seeded.now).total_seconds()
    assert 70 <= int(shown[1] or 0) * 60 + int(shown[2]) <= 70 + since, (lag, since)
    tables = {tuple(d.value.columns)[:2]: d.value for d in at.dataframe}
    checks = next(v for k, v in tables.items() if k == ("component", "status"))
    assert dict(zip(checks["component"], checks["status"], strict=True)) == {"spark": "healthy", "narrator": "degraded"}
    dead = next(v for k, v in tables.items() if k == ("reason", "records"))
    assert dict(zip(dead["reason"], dead["records"], strict=True)) == seeded.dead_letter_reasons
    models = next(v for k, v in tables.items() if k == ("version", "model"))
    assert list(models["version"]) == ["tf-0001", "if-0001"]
    assert metrics["Dead letters (last 6 hours)"] == "5"
    assert charts(at), "dead-letter chart missing"


@pytest.mark.parametrize("migrated", [False, True], ids=["no-db-file", "empty-schema"])
@pytest.mark.parametrize("page", [None, "anomalies", "incidents", "health"])
def test_empty_store_shows_empty_states(request, settings, page, migrated):
    if migrated:
        request.getfixturevalue("store")
    at = open_page(page)
    assert not at.exception and not at.error
    assert not charts(at)
    assert at.info, "an empty page must say why it is empty"


def test_incident_page_shows_ranked_root_cause_candidates_and_correlated_services(seeded, store):
    candidates = [
        {"service": "database", "score": 0.82, "evidence": "self time +300 ms per visit (median over 40)"},
        {
            "service": "payments",
            "score": 0.11,
            "evidence": "own errors: 3 of 40 visits failed while their callees were healthy",
        },
    ]
    store.execute(
        "UPDATE incidents SET root_cause_candidates = ? WHERE id = ?", [json.dumps(candidates), seeded.open_incident]
    )
    at = open_page("incidents")
    assert at.selectbox(key="incident_id").value == seeded.open_incident
    table = next(d.value for d in at.dataframe if "evidence" in d.value.columns)
    assert table[["rank", "service"]].values.tolist() == [[1, "database"], [2, "payments"]]
    assert table["score"].tolist() == pytest.approx([0.82, 0.11])
    assert "self time +300 ms" in table["evidence"].iloc[0]
    assert "**Related services:** checkout" in markdown_text(at)

    at.selectbox(key="incident_id").set_value(seeded.resolved_incident).run()
    assert not at.exception
    assert any("No ranked root-cause candidates" in m.value for m in at.info)
