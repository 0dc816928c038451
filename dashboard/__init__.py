"""The Streamlit dashboard: `streamlit run dashboard/app.py`.

Layout: `queries.py` (SQL through the shared Store, no Streamlit), `data.py`
(brief caching and error handling around those queries), `status.py` and
`traces.py` (pure derivations), `charts.py` (Plotly figures), `ui.py` (shared
widgets), `views/*.py` (the pages; rendering only).
"""
