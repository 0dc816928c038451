"""The overview's time-series panels as one Streamlit v2 component drawn with uPlot.

Why not Plotly here: on the overview (7 days x 10 services) Plotly's fixed work per
figure and per subplot in the browser was most of the page's render time, whatever the
number of points (issue 17). uPlot (MIT, vendored under `dashboard/assets/uplot/`, v1.6.32
from npm) draws each panel on one canvas; the component needs no iframe and no download
at run time. The payload is `charts.overview_panels` (pure, tested without a browser).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

ASSETS = Path(__file__).parent / "assets"
COMPONENT_NAME = "observability_time_series"
_CSS = """
.ts-grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0.75rem 1.5rem; width: 100%; }
.ts-cell { min-width: 0; }
.ts-wide { grid-column: 1 / -1; }
.uplot { font-family: inherit; color: var(--st-text-color, #31333F); }
.u-title { font-size: 16px; font-weight: 600; text-align: left; padding-left: 4px; }
.u-legend { font-size: 12px; text-align: left; }
.u-legend .u-series > * { padding: 1px 4px; }
.u-legend th { font-weight: 400; }
"""


def _js() -> str:
    library = (ASSETS / "uplot" / "uPlot.iife.min.js").read_text()
    return library + "\n" + (ASSETS / "time_series.js").read_text()


_mount = st.components.v2.component(
    COMPONENT_NAME,
    css=(ASSETS / "uplot" / "uPlot.min.css").read_text() + _CSS,
    js=_js(),
)


def render(payload: dict, *, key: str) -> None:
    """Draw the panels of `payload` (see `charts.overview_panels`)."""
    _mount(data=payload, key=key)
