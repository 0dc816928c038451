"""The traces page, the service map and their queries, against traces committed by the job's sink."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import trace_queries
from dashboard.service_map import HEALTH_COLORS, NO_METRICS, service_map_dot
from dashboard.status import DEGRADED, HEALTHY, INCIDENT, ServiceStatus
from dashboard.trace_queries import TraceSearch
from observability.store import utcnow
from tests.dashboard_fixtures import seed_dashboard
from tests.trace_fixtures import SHOWCASE_QUERY, expected_index, seed_traces

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def _seeded_template(tmp_path_factory):
    """Seeded once per module (a DuckDB file and bronze), copied into each test's DATA_DIR."""
    from observability.store import Store

    root = tmp_path_factory.mktemp("trace-pages")
    store = Store(root / "observability.duckdb")
    store.migrate()
    seed_dashboard(store, root / "bronze")
    seeded = seed_traces(store, root / "bronze", utcnow(), n_events=400)
    return root, seeded


@pytest.fixture
def traces(_seeded_template, store, settings):
    root, seeded = _seeded_template
    shutil.copyfile(root / "observability.duckdb", settings.duckdb_path)
    assert not (root / "observability.duckdb.wal").exists()  # closed connections checkpointed it
    shutil.copytree(root / "bronze", settings.bronze_dir, dirs_exist_ok=True)
    return seeded


def _page(page: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_search_filters_match_the_spans(traces, store, settings):
    want = expected_index(traces.events).set_index("trace_id")
    start, end = traces.start - timedelta(minutes=1), traces.end + timedelta(minutes=1)

    def ids(**kw) -> set[str]:
        return set(trace_queries.search_traces(store, settings.bronze_dir, TraceSearch(**kw), start, end)["trace_id"])

    assert ids() == set(want.index)
    assert ids(errors_only=True) == set(want.index[want.error_count > 0])
    assert ids(min_duration_ms=300) == set(want.index[want.duration_ms >= 300])
    assert ids(service="payments") == {t for t, s in want.services.items() if "payments" in s}
    assert ids(endpoint="pay") == set(want.index[want.root_endpoint.str.contains("pay")])
    assert ids(trace_id=traces.showcase.upper()) == {traces.showcase}
    assert ids(attribute=f"db.statement={SHOWCASE_QUERY}") == {traces.showcase}
    eu = {e["trace_id"] for e in traces.events if (e.get("attributes") or {}).get("region") == "eu"}
    assert ids(attribute="region=eu", errors_only=True) == eu & set(want.index[want.error_count > 0])
    # a span that excludes every trace, and a bad attribute filter
    assert ids(service="payments", trace_id="0" * 32) == set()
    with pytest.raises(ValueError, match="key=value"):
        TraceSearch(attribute="no-equals-sign").attribute_pair()


def test_service_edges_rates_and_callee_latency(traces, store):
    edges = trace_queries.service_edges(store, traces.start, traces.end + timedelta(minutes=1)).set_index(
        ["parent_service", "child_service"]
    )
    assert edges.loc[("checkout", "postgresql"), "calls"] == 6  # the showcase's N+1, its only caller
    e = edges.loc[("gateway", "checkout")]
    assert e.error_rate == pytest.approx(e.errors / e.calls)
    assert pd.isna(edges.loc[("checkout", "postgresql"), "callee_p95_ms"])  # no metrics of its own
    assert edges["callee_p95_ms"].notna().any()


def test_traces_page_lists_and_filters(traces):
    at = _page("traces")
    [table] = at.dataframe
    assert len(table.value) == min(200, len(expected_index(traces.events)))
    at = _page("traces", service="postgresql")
    assert at.selectbox(key="trace_service").value == "postgresql"
    assert at.dataframe[0].value["root_service"].tolist() == ["gateway"]  # only the showcase calls it


def test_trace_view_waterfall_findings_details_and_logs(traces):
    at = _page("traces", trace_id=traces.showcase)
    text = "\n".join(m.value for m in at.markdown)
    assert "error origin" in text and "payments" in text and "card processor timeout" in text
    assert "N+1" in text and "6 calls" in text
    assert "sequential" in text
    assert "synthetic root" in "\n".join(i.value for i in at.info)
    chart = at.get("plotly_chart")[0]
    assert '"critical path"' in chart.proto.spec
    spans = at.dataframe[0].value
    assert len(spans) == 11  # 10 spans + the synthetic root over the orphan
    assert spans["critical_ms"].sum() == pytest.approx(spans["duration_ms"].iloc[0])
    logs = at.dataframe[1].value
    assert logs["body"].tolist() == ["card processor timeout after 150 ms"]
    # the payments span (clock 180 ms ahead) was moved back inside checkout
    payments = spans[spans["label"].str.contains("payments")].iloc[0]
    checkout = spans[spans["label"].str.contains("checkout /checkout")].iloc[0]
    assert checkout.start_ms <= payments.start_ms
    assert payments.start_ms + payments.duration_ms <= checkout.start_ms + checkout.duration_ms


def test_unknown_trace_and_empty_search(store, settings):
    at = _page("traces", trace_id="f" * 32)
    assert "not in the trace index" in at.info[0].value
    at = _page("traces")
    assert "No traces" in at.info[0].value
    at = _page("service_map")
    assert "No calls between services" in at.info[0].value


def test_service_map_page(traces):
    at = _page("service_map", service="payments")
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"checkout" -> "payments"' in dot and "/min" in dot
    assert 'URL="traces?service=payments"' in dot
    fill, _ = HEALTH_COLORS[INCIDENT]  # payments has the open incident
    assert f'"payments" [fillcolor="{fill}"' in dot
    assert "penwidth=3" in dot.split('"payments" [')[1].split("\n")[0]  # selected


def test_service_map_dot_colours_labels_and_scale():
    services = [f"svc-{i:02d}" for i in range(50)]
    edges = pd.DataFrame(
        {
            "parent_service": services[:-1],
            "child_service": services[1:],
            "calls": 60.0,
            "errors": [6.0 if i == 3 else 0.0 for i in range(49)],
            "calls_per_min": [1.0 + i for i in range(49)],
            "error_rate": [0.1 if i == 3 else 0.0 for i in range(49)],
            "callee_p95_ms": [float("nan")] + [10.0] * 48,
        }
    )
    statuses = [
        ServiceStatus("svc-01", INCIDENT, ""),
        ServiceStatus("svc-02", DEGRADED, ""),
        *(ServiceStatus(s, HEALTHY, "") for s in services[3:]),
    ]
    dot = service_map_dot(edges, statuses)
    assert dot.count(" -> ") == 49 and dot.count("fillcolor=") == 50
    assert f'"svc-00" [fillcolor="{HEALTH_COLORS[NO_METRICS][0]}"' in dot
    assert f'"svc-01" [fillcolor="{HEALTH_COLORS[INCIDENT][0]}"' in dot
    assert f'"svc-02" [fillcolor="{HEALTH_COLORS[DEGRADED][0]}"' in dot
    red_edge = next(line for line in dot.splitlines() if '"svc-03" -> "svc-04"' in line)
    assert "10.0% err" in red_edge and 'color="#d62828"' in red_edge
    first = next(line for line in dot.splitlines() if '"svc-00" -> "svc-01"' in line)
    assert "1.0/min" in first and "p95" not in first and "err" not in first


def test_incidents_anomalies_and_overview_link_to_their_traces(traces):
    at = _page("incidents")
    [link] = [p for p in at.get("page_link") if "during the incident" in p.proto.label]
    assert "service=payments" in link.proto.query_string and "from=" in link.proto.query_string
    [trace] = [p for p in at.get("page_link") if p.proto.label.startswith("Open in Traces")]
    [sample] = [b for b in at.selectbox if (b.key or "").startswith("trace_")]
    assert trace.proto.query_string == f"trace_id={sample.value}"
    at = _page("anomalies")
    urls = at.dataframe[0].value["traces"].tolist()
    assert urls and all(u.startswith("traces?service=") and "&from=" in u and "&to=" in u for u in urls)
    at = _page("overview")
    tiles = [p.proto.query_string for p in at.get("page_link") if p.proto.label == "traces"]
    assert any("service=payments" in q for q in tiles)


def test_typing_a_trace_id_opens_it_and_back_returns_to_the_search(traces):
    at = _page("traces")
    at.text_input(key="trace_id_input").input(traces.showcase.upper()).run()
    assert at.query_params["trace_id"] == traces.showcase
    assert at.get("plotly_chart") and at.subheader[0].value == "gateway /api/checkout"
    at.button(key="trace_back").click().run()
    assert "trace_id" not in at.query_params
    assert not at.get("plotly_chart") and len(at.dataframe[0].value) > 1  # the results again
