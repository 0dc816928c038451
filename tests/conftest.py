"""Shared fixtures: an isolated DATA_DIR per test, real DuckDB files.

The fixture modules below are plugins of the whole session, so a test names a
fixture as an argument and imports only helper functions and constants (no
`import ... # noqa: F401` whose effect depends on import order).
`tests.airflow_fixtures` is first and sets Airflow's environment (a temporary
AIRFLOW_HOME, SQLite DB, the repository's dags/) when imported, before any test
module can import `airflow`; no code outside Airflow reads those variables, and
`scripts/airflow_local.py` sets its own for the processes it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
ARTIFACTS = ROOT / "test-artifacts"

pytest_plugins = [
    "tests.airflow_fixtures",  # environment first: before anything imports airflow
    "tests.disk_fixtures",
    "tests.kafka_broker",
    "tests.llm_fixtures",
    "tests.otlp_fixtures",
    "tests.search_fixtures",
    "tests.transport_fixtures",
]


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A fresh DATA_DIR, exported so subprocesses and get_settings() see it."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("DATA_DIR", str(d))
    monkeypatch.delenv("DUCKDB_PATH", raising=False)
    monkeypatch.setenv("TRANSPORT", "local")
    # no /metrics servers on the fixed default ports (a running `make local` holds them); a test
    # that scrapes a service sets its METRICS_PORT_<SERVICE> to a free port
    for service in (
        "GENERATOR",
        "INGEST",
        "SPARK",
        "DETECTOR",
        "NARRATOR",
        "MODEL_SERVER",
        "NOTIFIER",
        "FORECASTER",
        "INDEXER",
    ):
        monkeypatch.setenv(f"METRICS_PORT_{service}", "0")
    from observability.settings import get_settings

    get_settings.cache_clear()
    yield d
    get_settings.cache_clear()


@pytest.fixture
def settings(data_dir):
    from observability.settings import get_settings

    return get_settings()


@pytest.fixture
def store(settings):
    from observability.store import Store

    s = Store.from_settings(settings)
    s.migrate()
    return s


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
