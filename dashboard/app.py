"""Dashboard entry point: `streamlit run dashboard/app.py`.

The frame shared by every page (title, time range, refresh note) plus the
page router. Pages live in `dashboard/views/` (not `pages/`: that name switches Streamlit to its legacy directory-based navigation, bypassing st.navigation) and only render.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts dashboard/ on sys.path, not the repo root.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

# An emoji favicon, not a material icon: Streamlit's browser code fetches a material favicon
# from fonts.gstatic.com, which an offline install cannot reach (nothing downloads at run time).
st.set_page_config(page_title="Observability", page_icon="📈", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/anomalies.py", title="Anomalies", icon=":material/scatter_plot:", url_path="anomalies"),
    st.Page("views/incidents.py", title="Incidents", icon=":material/report:", url_path="incidents"),
    st.Page("views/traces.py", title="Traces", icon=":material/timeline:", url_path="traces"),
    st.Page("views/service_map.py", title="Service map", icon=":material/hub:", url_path="service-map"),
    st.Page("views/health.py", title="Health", icon=":material/monitor_heart:", url_path="health"),
    st.Page("views/sql.py", title="SQL", icon=":material/terminal:", url_path="sql"),
    st.Page("views/search.py", title="Search", icon=":material/search:", url_path="search"),
]

page = st.navigation(PAGES)
st.sidebar.title("Observability")
ui.range_selector()
st.sidebar.caption(f"Live panels refresh every {ui.refresh_seconds()} s (DASHBOARD_REFRESH_SECONDS). Times are UTC.")
page.run()
