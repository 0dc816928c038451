"""Seeded stores for the detection tests (real DuckDB files, realistic rows)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from observability import tables
from observability.store import Store
from tests.seeding import seed_metrics

START = datetime(2025, 3, 3, 0, 0)
# checkout -> payments, checkout -> inventory -> database
CALL_GRAPH = (("checkout", "payments"), ("checkout", "inventory"), ("inventory", "database"))


def seed_cascade(
    store: Store, minutes: int = 240, fault: tuple[int, int] = (200, 210), watermark_minute: int | None = None
) -> pd.DataFrame:
    """A database fault that shows in inventory and, a minute later, in checkout."""
    df = seed_metrics(store, start=START, minutes=minutes, seed=7, incident=("database", *fault))
    m0, m1 = fault

    def worsen(con, service, first):
        con.execute(
            f"""UPDATE {tables.SERVICE_METRICS}
                SET error_count = CAST(round(request_count * 0.3) AS BIGINT), error_rate = round(request_count * 0.3) / request_count,
                    p95_latency_ms = p95_latency_ms * 3, avg_latency_ms = avg_latency_ms * 3
                WHERE service = ? AND window_start BETWEEN ? AND ?""",
            [service, START + timedelta(minutes=first), START + timedelta(minutes=m1)],
        )

    store.write(lambda con: (worsen(con, "inventory", m0), worsen(con, "checkout", m0 + 1)))
    deps = [
        (START + timedelta(minutes=m), p, c, 100, 30 if (m0 <= m <= m1 and c in ("inventory", "database")) else 1)
        for m in range(minutes)
        for p, c in CALL_GRAPH
    ]
    store.executemany(
        f"INSERT INTO {tables.SERVICE_DEPENDENCIES} (window_start, parent_service, child_service, call_count, error_count) VALUES (?, ?, ?, ?, ?)",
        deps,
    )
    store.executemany(
        f"INSERT INTO {tables.TRACE_SAMPLES} (window_start, service, trace_id, reason) VALUES (?, ?, ?, ?)",
        [
            (START + timedelta(minutes=m0), "database", "a" * 32, "normal"),
            (START + timedelta(minutes=m0), "database", "f" * 32, "error"),
            (START + timedelta(minutes=m0), "database", "e" * 32, "error"),
            (START + timedelta(minutes=m0), "database", "b" * 32, "slow"),
        ],
    )
    set_watermark(store, watermark_minute if watermark_minute is not None else minutes, batch_id=1)
    return df


def set_watermark(store: Store, minute: int, batch_id: int) -> None:
    wm = START + timedelta(minutes=minute)
    store.execute(
        f"""INSERT OR REPLACE INTO {tables.STREAM_PROGRESS} (batch_id, processed_at, rows_in, rows_rejected, rows_late, max_event_time, watermark)
            VALUES (?, ?, 0, 0, 0, ?, ?)""",
        [batch_id, wm, wm + timedelta(minutes=1), wm],
    )
