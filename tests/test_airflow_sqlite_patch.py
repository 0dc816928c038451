"""The SQLite audit-log patch (scripts/airflow_sqlite.py) is pinned to the Airflow it was written for."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _patch_module():
    spec = importlib.util.spec_from_file_location("airflow_sqlite", ROOT / "scripts" / "airflow_sqlite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_patched_function_is_the_one_the_patch_was_written_for():
    """Fails when an Airflow upgrade changes `action_logging`: re-read it, then update the
    version and digest in scripts/airflow_sqlite.py (or drop the patch if upstream fixed it)."""
    from airflow.api_fastapi.logging import decorators

    assert _patch_module().patch_applies(decorators) is None


def test_the_patch_stands_down_on_a_function_it_does_not_know(caplog):
    patch = _patch_module()
    other = types.ModuleType("decorators")

    def action_logging(event=None):  # not Airflow 3.3.2's text
        return event

    other.action_logging = action_logging
    other.SessionDep = other.GetUserDep = object
    patch._patch(other)
    assert other.action_logging is action_logging
    assert "not patching" in caplog.text
