"""The dashboard in a real headless Chromium (Debian's package) driven by Playwright.

`streamlit run dashboard/app.py` runs as a subprocess on a seeded DATA_DIR;
each page must show its charts (uPlot panels on the overview, Plotly elsewhere),
the incidents page its summary, and a
screenshot of every page lands in test-artifacts/ as dashboard_<page>.png;
then a row written while the health page is open must appear without a reload.
"""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import server
from observability import tables
from observability.store import utcnow
from tests.dashboard_fixtures import CHROMIUM, CHROMIUM_ARGS, NOVEL_SERVICE, TEMPLATE_SUMMARY, seed_dashboard
from tests.worker_ports import worker_share

HOST = "127.0.0.1"
PORTS = worker_share(range(8600, 8606))  # this xdist worker's share; 8606-8610 are the benchmark's
REFRESH_SECONDS = 2
NEW_REASON = "reason that arrived while the page was open"
PAGES = {"overview": "", "anomalies": "anomalies", "incidents": "incidents", "health": "health"}
# the overview's uPlot panels (canvases inside the component's shadow root): per canvas, the
# largest share of one pixel column painted with the incident shading's translucent red
SHADED_COLUMN_JS = """() => [...document.querySelectorAll('*')].filter(e => e.shadowRoot)
    .flatMap(e => [...e.shadowRoot.querySelectorAll('.uplot canvas')]).map(c => {
        const {width, height} = c, px = c.getContext('2d').getImageData(0, 0, width, height).data;
        let best = 0;
        for (let x = 0; x < width; x++) {
            let n = 0;
            for (let y = 0; y < height; y++) {
                const i = 4 * (y * width + x);
                if (px[i + 3] > 15 && px[i + 3] < 60 && px[i] > px[i + 1] + 80) n++;
            }
            best = Math.max(best, n / height);
        }
        return best;
    })"""


@pytest.fixture
def dashboard_url(store, settings, data_dir, tmp_path):
    seed_dashboard(store, settings.bronze_dir)
    port = server.free_port(HOST, PORTS)
    env = {"DATA_DIR": str(data_dir), "DASHBOARD_REFRESH_SECONDS": str(REFRESH_SECONDS)}
    proc = server.start(HOST, port, env=env, log_path=tmp_path / "streamlit.log")
    try:
        server.wait_healthy(HOST, port, timeout=60, proc=proc)
        yield f"http://{HOST}:{port}"
    finally:
        server.stop(proc)
    assert proc.poll() is not None, "streamlit still running"


def test_pages_render_in_chromium(dashboard_url, artifacts_dir, store):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2600})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            elsewhere: list[str] = []  # nothing downloads at run time: every request stays on the dashboard's host
            page.on(
                "request",
                lambda r: None if r.url.startswith((dashboard_url, "data:", "blob:")) else elsewhere.append(r.url),
            )
            for name, path in PAGES.items():
                page.goto(f"{dashboard_url}/{path}")
                chart = page.locator(".uplot" if name == "overview" else ".js-plotly-plot").first
                expect(chart).to_be_visible(timeout=45_000)
                expect(page.locator("[data-testid=stMain] h1").first).to_have_text(name.capitalize())
                if name == "overview":
                    expect(page.get_by_text(NOVEL_SERVICE, exact=True).first).to_be_visible()
                    assert_overview_panels_drawn(page, expect)
                    # the live fragment refreshes every 2 s: the panels are redrawn in place, not added
                    updated = page.get_by_text("Updated ").first.inner_text()
                    expect(page.get_by_text("Updated ").first).not_to_have_text(updated, timeout=15_000)
                    assert_overview_panels_drawn(page, expect)
                if name == "incidents":
                    expect(page.get_by_text(TEMPLATE_SUMMARY)).to_be_visible()
                    expect(page.get_by_text("Template summary", exact=True)).to_be_visible()
                    expect(page.locator(".js-plotly-plot")).to_have_count(2)  # detector scores + waterfall
                # no Streamlit exception box, no "page not found" dialog
                assert page.locator('[data-testid="stException"]').count() == 0
                assert page.get_by_text("Page not found").count() == 0
                page.wait_for_timeout(500)  # let Plotly finish its transitions
                page.screenshot(path=str(artifacts_dir / f"dashboard_{name}.png"))
            assert not errors, errors
            assert not elsewhere, elsewhere

            # auto-refresh: a new dead-letter reason shows up without reloading the page
            page.evaluate("window.__not_reloaded = true")
            store.insert_df(
                tables.DEAD_LETTER,
                pd.DataFrame([dict(received_at=utcnow(), source="test", reason=NEW_REASON, payload="")]),
            )
            expect(page.get_by_text(NEW_REASON).first).to_be_visible(timeout=30_000)
            assert page.evaluate("window.__not_reloaded") is True
        finally:
            browser.close()


def assert_overview_panels_drawn(page, expect) -> None:
    """Five uPlot panels (request rate, error rate, p50, p95, p99), each with the open
    incident's shading painted over most of a pixel column, and a legend naming the services."""
    panels = page.locator(".uplot")
    expect(panels).to_have_count(5)  # retried: a refresh may be in flight
    expect(panels.nth(0).locator(".u-legend")).to_contain_text(NOVEL_SERVICE)
    shaded = page.evaluate(SHADED_COLUMN_JS)
    assert len(shaded) == 5 and min(shaded) > 0.4, shaded


@pytest.fixture
def traces_dashboard(store, settings, data_dir, tmp_path):
    """The seeded dashboard plus traces committed through the job's sink (tests.trace_fixtures)."""
    from tests.trace_fixtures import seed_traces

    seed_dashboard(store, settings.bronze_dir)
    seeded = seed_traces(store, settings.bronze_dir, utcnow())
    port = server.free_port(HOST, PORTS)
    env = {"DATA_DIR": str(data_dir), "DASHBOARD_REFRESH_SECONDS": "60"}
    proc = server.start(HOST, port, env=env, log_path=tmp_path / "streamlit.log")
    try:
        server.wait_healthy(HOST, port, timeout=60, proc=proc)
        yield f"http://{HOST}:{port}", seeded
    finally:
        server.stop(proc)
    assert proc.poll() is not None, "streamlit still running"


def test_trace_pages_render_in_chromium(traces_dashboard, artifacts_dir):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    url, seeded = traces_dashboard
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1500})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # the search: a results table of the index
            page.goto(f"{url}/traces?service=payments")
            expect(page.locator("[data-testid=stMain] h1").first).to_have_text("Traces")
            expect(page.locator("[data-testid=stDataFrame]").first).to_be_visible(timeout=45_000)
            expect(page.get_by_text("trace(s), newest first")).to_be_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=str(artifacts_dir / "dashboard_traces_search.png"))
            # one trace: waterfall with the critical path, findings, logs
            page.goto(f"{url}/traces?trace_id={seeded.showcase}")
            expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=45_000)
            expect(page.get_by_text("error origin").first).to_be_visible()
            expect(page.get_by_text("N+1").first).to_be_visible()
            expect(page.get_by_text("card processor timeout after 150 ms").first).to_be_attached(
                timeout=15_000
            )  # a canvas grid cell
            expect(page.locator(".js-plotly-plot .legendtext", has_text="critical path")).to_have_count(1)
            page.wait_for_timeout(800)
            page.screenshot(path=str(artifacts_dir / "dashboard_trace.png"), full_page=True)
            # the service map, drawn by Graphviz in the browser
            page.goto(f"{url}/service-map?service=payments")
            expect(page.locator("[data-testid=stMain] h1").first).to_have_text("Service map")
            node = page.locator("svg g.node", has_text="payments")
            expect(node.first).to_be_visible(timeout=45_000)
            expect(page.locator("svg g.edge")).to_have_count(6)
            expect(page.locator("svg g.edge text", has_text="/min").first).to_be_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=str(artifacts_dir / "dashboard_service_map.png"))
            assert page.locator('[data-testid="stException"]').count() == 0
            # clicking a node opens that service's traces
            page.locator("svg g.node", has_text="inventory").first.click()
            expect(page.locator("[data-testid=stMain] h1").first).to_have_text("Traces", timeout=45_000)
            assert "service=inventory" in page.url, page.url
            expect(page.get_by_text("trace(s), newest first")).to_be_visible(timeout=45_000)
            assert page.get_by_text("Page not found").count() == 0
            assert not errors, errors
        finally:
            browser.close()
