"""Time ranges the dashboard offers, and the bucket each one is drawn at.

Charts stay light at any range: the bucket grows with the range so a chart
never carries more than a few hundred points per series (7 days at
30-minute buckets is 336 points), and the downsampling happens in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class TimeRange:
    key: str
    label: str
    minutes: int
    bucket_minutes: int

    def start(self, now: datetime) -> datetime:
        return now - timedelta(minutes=self.minutes)


RANGES: dict[str, TimeRange] = {
    r.key: r
    for r in (
        TimeRange("1h", "Last hour", 60, 1),
        TimeRange("6h", "Last 6 hours", 6 * 60, 1),
        TimeRange("24h", "Last 24 hours", 24 * 60, 5),
        TimeRange("7d", "Last 7 days", 7 * 24 * 60, 30),
    )
}
DEFAULT_RANGE = "6h"


def get_range(key: str | None) -> TimeRange:
    return RANGES.get(key or DEFAULT_RANGE, RANGES[DEFAULT_RANGE])
