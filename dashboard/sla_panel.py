"""The overview's "SLA risk" panel: services forecast to cross an SLA within the hour, with the chance.

Reads `sla_risk` (the forecaster's newest assessment, observability.forecasts);
a separate render function so the overview page only calls it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui
from observability import forecasts
from observability.settings import get_settings

METRIC_LABEL = {"p99_latency_ms": "p99 latency", "p95_latency_ms": "p95 latency", "error_rate": "error rate"}


@st.cache_data(ttl=data.CACHE_TTL_SECONDS, show_spinner=False)
def _sla_risk(db: str) -> pd.DataFrame:
    return forecasts.sla_risk(data._store(db))


def _value(metric: str, v: float) -> str:
    return ui.fmt_pct(v) if metric == "error_rate" else ui.fmt_ms(v)


def risk_table(risk: pd.DataFrame) -> pd.DataFrame:
    """The at-risk rows as the page shows them."""
    rows = risk[risk["at_risk"]]
    return pd.DataFrame(
        {
            "Service": rows["service"],
            "SLA": [METRIC_LABEL.get(m, m) for m in rows["metric"]],
            "Threshold": [_value(m, v) for m, v in zip(rows["metric"], rows["sla"], strict=True)],
            "Chance within the hour": [f"{p:.0%}" for p in rows["probability"]],
            "Crossing from (UTC)": [
                "" if pd.isna(t) else pd.Timestamp(t).strftime("%H:%M") for t in rows["crossing_time"]
            ],
            "Predicted peak": [_value(m, v) for m, v in zip(rows["metric"], rows["predicted_peak"], strict=True)],
            "SLA source": rows["sla_source"],
        }
    )


@st.fragment(run_every=ui.refresh_seconds())
def render_sla_risk() -> None:
    st.subheader("SLA risk · next hour")
    risk = data._safe("SLA risk", _sla_risk, data._db())
    threshold = get_settings().forecast_risk_probability
    if risk.empty:
        ui.empty_state(
            "No forecasts yet. `python -m anomaly_detection.forecaster` (part of `make local`) forecasts each "
            "service once it has 15 minutes of 1-minute windows and refreshes every 5 minutes."
        )
        return
    made_at = pd.Timestamp(risk["made_at"].max())
    at_risk = risk[risk["at_risk"]]
    if at_risk.empty:
        top = risk.iloc[0]
        st.success(
            f"No service is forecast to cross an SLA within the hour (chance below {threshold:.0%} for every SLA; "
            f"highest: {top['probability']:.0%}, {ui.md_escape(str(top['service']))} "
            f"{METRIC_LABEL.get(top['metric'], top['metric'])}).",
            icon=":material/check_circle:",
        )
    else:
        services = sorted(set(at_risk["service"]))
        st.warning(
            f"{len(services)} service(s) at risk of crossing an SLA within the hour: "
            f"{', '.join(ui.md_escape(s) for s in services)}.",
            icon=":material/trending_up:",
        )
        st.dataframe(risk_table(risk), hide_index=True, key="sla_risk_table")
    # Table names in bold, not `code`: the monospace font is the only one the overview would
    # load for this caption, and a font that starts loading while a Plotly chart draws makes
    # Plotly draw that chart again once it has loaded (measured: three more draws per visit).
    st.caption(
        f"Forecast made {made_at:%H:%M:%S} UTC. At risk: a chance of at least {threshold:.0%} "
        "(FORECAST_RISK_PROBABILITY) that some 5-minute bucket of the next hour is over the SLA, read off the "
        "forecast's prediction interval. Table **sla_risk**; forecasts in **forecasts** (see the SQL page)."
    )
