"""`python -m dashboard`: `streamlit run dashboard/app.py` on DASHBOARD_HOST:DASHBOARD_PORT."""

import argparse
import os

from dashboard.server import command
from observability.settings import get_settings

parser = argparse.ArgumentParser(
    prog="python -m dashboard",
    description="The dashboard: `streamlit run dashboard/app.py` on DASHBOARD_HOST:DASHBOARD_PORT.",
    epilog="Other arguments are passed on to `streamlit run` (see `streamlit run --help`).",
)
_, streamlit_args = parser.parse_known_args()
settings = get_settings()
argv = command(settings.dashboard_host, settings.dashboard_port) + streamlit_args
os.execv(argv[0], argv)
