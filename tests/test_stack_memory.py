"""What keeps the `make local` stack's memory down: bronze reads of only the columns used
and two glibc arenas for every service (issue 17)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from observability import bronze
from observability.settings import Settings

T0 = datetime(2026, 11, 30, 12, 0, 0)


def _spans() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "trace_id": f"{i % 3:032x}",
                "span_id": f"{i:016x}",
                "service": "checkout",
                "endpoint": "POST /api/checkout",
                "status_code": 200 if i % 2 else 503,
                "latency_ms": 10.0 + i,
                "error_message": None if i % 2 else "upstream unavailable",
                "timestamp": T0 + timedelta(seconds=i),
            }
            for i in range(6)
        ]
    )


def test_bronze_reads_only_the_columns_asked_for_with_the_same_rows(tmp_path):
    bronze.write_events(tmp_path, _spans())
    window = (T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    full = bronze.read_events(tmp_path, *window)
    cols = ["trace_id", "service", "status_code", "timestamp"]
    some = bronze.read_events(tmp_path, *window, "status_code = ?", [503], columns=cols)
    assert list(some.columns) == cols
    expected = full[full["status_code"] == 503][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(some.reset_index(drop=True), expected)
    empty = bronze.read_events(tmp_path, T0 + timedelta(days=2), T0 + timedelta(days=3), columns=cols)
    assert list(empty.columns) == cols and empty.empty
    with pytest.raises(ValueError, match="not bronze columns"):
        bronze.read_events(tmp_path, *window, columns=["trace_id", "no_such_column"])


def test_every_service_of_make_local_gets_two_malloc_arenas_unless_set(tmp_path, monkeypatch):
    from scripts import local

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    conf = local.supervisor_conf(Settings(DATA_DIR=tmp_path)).read_text()
    programs = conf.count("[program:")
    assert programs > 5 and conf.count('MALLOC_ARENA_MAX="2"') == programs
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    conf = local.supervisor_conf(Settings(DATA_DIR=tmp_path)).read_text()
    assert conf.count('MALLOC_ARENA_MAX="4"') == programs and 'MALLOC_ARENA_MAX="2"' not in conf
