#!/usr/bin/env bash
# Status of every service (process, port, HTTP health), DuckDB row counts, pipeline lag.
# Exits non-zero when anything is unhealthy. `make health` runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/health_check.py "$@"
