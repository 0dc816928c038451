"""Time ranges the dashboard offers, Grafana's way, and the bucket each is drawn at (pure).

A range is two expressions, `from` and `to` (the URL parameters), each one of

- ISO 8601: `2026-03-02T00:00:00Z`, `2026-03-02T06:00:00+01:00`, `2026-03-02`
  (no offset means UTC);
- epoch milliseconds: `1772409600000`;
- a relative expression: `now`, `now-6h`, `now-7d`, `now+15m`, optionally
  rounded to the start of a unit (`now/d`, `now-1d/d`; in `to` the rounding
  goes to the unit's end, so `from=now-1d/d&to=now-1d/d` is all of yesterday).
  Units: s, m, h, d, w, M (months), y.

`resolve` turns them into a `Window` (naive UTC start and end, as every
TIMESTAMP column holds) with the bucket chosen from the span: charts stay
light at any range, never more than `MAX_POINTS` points per series (7 days at
30-minute buckets is 336 points), and the downsampling happens in SQL.

No Streamlit here: the pages reach this through `dashboard.ui.current_window`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_FROM = "now-6h"
DEFAULT_TO = "now"
MAX_POINTS = 360
# Bucket sizes a chart may use, in minutes (smallest that keeps <= MAX_POINTS wins).
BUCKET_LADDER = (1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "M": "months", "y": "years"}
_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "M": "month", "y": "year"}
_RELATIVE = re.compile(r"^now(?P<ops>(?:[+-]\d+[smhdwMy])*)(?:/(?P<round>[smhdwMy]))?$")
_OP = re.compile(r"([+-])(\d+)([smhdwMy])")


class RangeError(ValueError):
    """A `from`/`to` the dashboard cannot read; its message says what was wrong."""


def choose_bucket(span: timedelta) -> int:
    """Bucket minutes for a span: the smallest ladder step giving at most MAX_POINTS points."""
    minutes = max(span.total_seconds() / 60.0, 1.0)
    for step in BUCKET_LADDER:
        if minutes / step <= MAX_POINTS:
            return step
    return BUCKET_LADDER[-1]


@dataclass(frozen=True)
class TimeRange:
    """A relative preset: the last `minutes` minutes up to now."""

    key: str
    label: str
    minutes: int

    @property
    def bucket_minutes(self) -> int:
        return choose_bucket(timedelta(minutes=self.minutes))

    @property
    def from_expr(self) -> str:
        return f"now-{self.key}"

    @property
    def to_expr(self) -> str:
        return DEFAULT_TO

    def start(self, now: datetime) -> datetime:
        return now - timedelta(minutes=self.minutes)

    def end(self, now: datetime) -> datetime:
        return now


RANGES: dict[str, TimeRange] = {
    r.key: r
    for r in (
        TimeRange("15m", "Last 15 minutes", 15),
        TimeRange("1h", "Last hour", 60),
        TimeRange("3h", "Last 3 hours", 3 * 60),
        TimeRange("6h", "Last 6 hours", 6 * 60),
        TimeRange("12h", "Last 12 hours", 12 * 60),
        TimeRange("24h", "Last 24 hours", 24 * 60),
        TimeRange("2d", "Last 2 days", 2 * 24 * 60),
        TimeRange("7d", "Last 7 days", 7 * 24 * 60),
        TimeRange("30d", "Last 30 days", 30 * 24 * 60),
    )
}
DEFAULT_RANGE = "6h"


def get_range(key: str | None) -> TimeRange:
    return RANGES.get(key or DEFAULT_RANGE, RANGES[DEFAULT_RANGE])


# --- parsing ------------------------------------------------------------------------
def _add_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    # clamp the day (Jan 31 + 1 month = Feb 28/29)
    for day in range(t.day, 27, -1):
        try:
            return t.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return t.replace(year=year, month=month, day=min(t.day, 28))


def _shift(t: datetime, sign: str, n: int, unit: str) -> datetime:
    n = n if sign == "+" else -n
    if unit == "M":
        return _add_months(t, n)
    if unit == "y":
        return _add_months(t, 12 * n)
    return t + timedelta(**{_UNITS[unit]: n})


def _round_down(t: datetime, unit: str) -> datetime:
    if unit == "s":
        return t.replace(microsecond=0)
    if unit == "m":
        return t.replace(second=0, microsecond=0)
    if unit == "h":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return day
    if unit == "w":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if unit == "M":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _round_up(t: datetime, unit: str) -> datetime:
    """The unit's end: the next unit's start (ranges are half-open, end excluded)."""
    start = _round_down(t, unit)
    return _shift(start, "+", 1, unit)


def _relative(expr: str, now: datetime, *, is_end: bool) -> datetime | None:
    m = _RELATIVE.match(expr)
    if not m:
        return None
    t = now
    for sign, n, unit in _OP.findall(m.group("ops") or ""):
        t = _shift(t, sign, int(n), unit)
    if m.group("round"):
        t = (_round_up if is_end else _round_down)(t, m.group("round"))
    return t


def _absolute(expr: str) -> datetime | None:
    if expr.isdigit():  # epoch milliseconds, as Grafana writes them
        try:
            return datetime.fromtimestamp(int(expr) / 1000.0, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        t = datetime.fromisoformat(expr.replace("z", "Z").replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def parse_time(expr: str, now: datetime, *, is_end: bool = False) -> datetime:
    """One `from`/`to` expression as naive UTC. `now` is naive UTC."""
    text = (expr or "").strip()
    if not text:
        raise RangeError("empty time: use ISO 8601, epoch milliseconds or now-6h")
    t = _relative(text, now, is_end=is_end) if text.startswith("now") else _absolute(text)
    if t is None:
        raise RangeError(
            f"cannot read time {text!r}: use ISO 8601 (2026-03-02T00:00:00Z), "
            "epoch milliseconds (1772409600000) or an expression like now-6h"
        )
    return t


def is_relative(expr: str) -> bool:
    return (expr or "").strip().startswith("now")


@dataclass(frozen=True)
class Window:
    """A resolved range: what every page query and chart reads."""

    start: datetime
    end: datetime
    bucket_minutes: int
    from_expr: str
    to_expr: str

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def bucket(self) -> timedelta:
        return timedelta(minutes=self.bucket_minutes)

    @property
    def is_live(self) -> bool:
        """Ends at now: the page keeps refreshing it."""
        return self.to_expr.strip() == DEFAULT_TO

    @property
    def preset(self) -> str | None:
        return preset_for(self.from_expr, self.to_expr)

    @property
    def label(self) -> str:
        """'Last 6 hours' for a preset, else the resolved span in UTC."""
        if self.preset:
            return RANGES[self.preset].label
        same_day = self.start.date() == self.end.date()
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:{'%H:%M' if same_day else '%Y-%m-%d %H:%M'}} UTC"

    @property
    def phrase(self) -> str:
        """For sentences: 'in the last 6 hours' / 'between 2026-03-02 00:00 and 06:00 UTC'."""
        if self.preset:
            return f"in the {RANGES[self.preset].label.lower()}"
        return "between " + self.label.replace(" to ", " and ", 1)

    def params(self) -> dict[str, str]:
        """The URL parameters that reopen this range (links keep it)."""
        return {"from": self.from_expr, "to": self.to_expr}


def resolve(from_expr: str | None, to_expr: str | None, now: datetime) -> Window:
    """The window of two expressions (missing ones take the defaults, now-6h and now)."""
    f = (from_expr or "").strip() or DEFAULT_FROM
    t = (to_expr or "").strip() or DEFAULT_TO
    start = parse_time(f, now)
    end = parse_time(t, now, is_end=True)
    if end <= start:
        raise RangeError(
            f"the range is empty: from ({start:%Y-%m-%d %H:%M:%S}) is not before to ({end:%Y-%m-%d %H:%M:%S})"
        )
    return Window(start=start, end=end, bucket_minutes=choose_bucket(end - start), from_expr=f, to_expr=t)


def preset_for(from_expr: str, to_expr: str) -> str | None:
    """The preset key a (from, to) pair spells, if any (now-6h .. now -> '6h')."""
    if (to_expr or "").strip() != DEFAULT_TO:
        return None
    f = (from_expr or "").strip()
    return next((k for k, r in RANGES.items() if r.from_expr == f), None)


def iso(t: datetime) -> str:
    """A naive UTC time as the ISO 8601 a URL carries (2026-03-02T06:00:00Z)."""
    return t.replace(microsecond=0).isoformat() + "Z"


def jump_to(newest: datetime, span: timedelta, bucket: timedelta = timedelta(minutes=1)) -> tuple[str, str]:
    """(from, to) of a range of the same span that ends just after the newest data.

    The end is the newest row's time rounded up to the next whole minute (plus
    one bucket so the newest bucket is complete), as absolute ISO times.
    """
    end = _round_down(newest, "m") + max(bucket, timedelta(minutes=1))
    return iso(end - span), iso(end)


def bounds(tr: TimeRange | Window, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) of a preset or a resolved window: what the queries filter on."""
    if isinstance(tr, Window):
        return tr.start, tr.end
    return tr.start(now), tr.end(now)
