"""Which incidents await a summary: one definition, read by the narrator and by health.

An incident awaits a summary when it has none, or when it changed after the
facts its latest summary was built from (`incidents.updated_at` newer than the
`incident_updated_at` recorded in that summary's facts; a summary without that
key covers the incident as of its `created_at`). Comparing against the facts
rather than the summary's write time means a change that lands while a summary
is being written still leaves the incident pending.
"""

from __future__ import annotations

from datetime import datetime

from observability import tables
from observability.store import Store

AWAITING_SUMMARY_SQL = f"""
WITH covered AS (
    SELECT incident_id,
           max(coalesce(TRY_CAST(json_extract_string(facts, '$.incident_updated_at') AS TIMESTAMP), created_at)) AS upto
    FROM {tables.INCIDENT_SUMMARIES} GROUP BY incident_id
)
SELECT i.id, i.updated_at FROM {tables.INCIDENTS} i LEFT JOIN covered c ON c.incident_id = i.id
WHERE c.upto IS NULL OR i.updated_at > c.upto
"""


def awaiting_summary(store: Store) -> list[str]:
    """Ids of the incidents awaiting a summary, oldest change first."""
    return [r[0] for r in store.fetch_all(f"SELECT id FROM ({AWAITING_SUMMARY_SQL}) ORDER BY updated_at, id")]


def backlog(store: Store) -> tuple[int, datetime | None]:
    """(incidents awaiting a summary, the oldest such change)."""
    row = store.fetch_one(f"SELECT count(*), min(updated_at) FROM ({AWAITING_SUMMARY_SQL})")
    return (int(row[0]), row[1]) if row else (0, None)
