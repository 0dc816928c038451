"""`python -m dashboard`: `streamlit run dashboard/app.py` on DASHBOARD_HOST:DASHBOARD_PORT."""

import os
import sys

from observability.settings import get_settings

from dashboard.server import command

settings = get_settings()
argv = command(settings.dashboard_host, settings.dashboard_port) + sys.argv[1:]
os.execv(argv[0], argv)
