"""The dashboard's time ranges (dashboard/ranges.py): Grafana-style from/to, buckets, jumps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dashboard import ranges
from dashboard.ranges import RANGES, RangeError, choose_bucket, jump_to, parse_time, preset_for, resolve

NOW = datetime(2026, 12, 1, 11, 37, 42, 123000)  # naive UTC, a Tuesday


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("2026-03-02T00:00:00Z", datetime(2026, 3, 2)),
        ("2026-03-02T06:30:00z", datetime(2026, 3, 2, 6, 30)),
        ("2026-03-02T07:00:00+01:00", datetime(2026, 3, 2, 6)),  # an offset is converted to UTC
        ("2026-03-02T06:00:00", datetime(2026, 3, 2, 6)),  # no offset: UTC
        ("2026-03-02 06:00", datetime(2026, 3, 2, 6)),
        ("2026-03-02", datetime(2026, 3, 2)),
        ("1772409600000", datetime(2026, 3, 2)),  # epoch milliseconds
        ("1772409600500", datetime(2026, 3, 2, 0, 0, 0, 500000)),
        ("now", NOW),
        ("now-6h", NOW - timedelta(hours=6)),
        ("now-90m", NOW - timedelta(minutes=90)),
        ("now-7d", NOW - timedelta(days=7)),
        ("now-2w", NOW - timedelta(weeks=2)),
        ("now+15m", NOW + timedelta(minutes=15)),
        ("now-1d-12h", NOW - timedelta(days=1, hours=12)),
        ("now-1M", datetime(2026, 11, 1, 11, 37, 42, 123000)),
        ("now-1y", datetime(2025, 12, 1, 11, 37, 42, 123000)),
        ("now/d", datetime(2026, 12, 1)),
        ("now-1d/d", datetime(2026, 11, 30)),
        ("now/h", datetime(2026, 12, 1, 11)),
        ("now/w", datetime(2026, 11, 30)),  # ISO weeks start on Monday
        ("now/M", datetime(2026, 12, 1)),
        ("  now-6h  ", NOW - timedelta(hours=6)),
    ],
)
def test_parse_time_forms(expr, expected):
    assert parse_time(expr, NOW) == expected


def test_rounding_in_to_goes_to_the_unit_end():
    # from=now-1d/d&to=now-1d/d is the whole of yesterday, Grafana's way
    win = resolve("now-1d/d", "now-1d/d", NOW)
    assert (win.start, win.end) == (datetime(2026, 11, 30), datetime(2026, 12, 1))
    assert parse_time("now/M", NOW, is_end=True) == datetime(2027, 1, 1)


def test_month_arithmetic_clamps_the_day():
    assert parse_time("now-1M", datetime(2026, 3, 31, 12)) == datetime(2026, 2, 28, 12)
    assert parse_time("now-1y", datetime(2028, 2, 29)) == datetime(2027, 2, 28)


@pytest.mark.parametrize("bad", ["", "yesterday", "now-6", "now-6x", "now*2", "2026-13-02", "2026-03-02T25:00", "-5"])
def test_unreadable_times_say_what_is_accepted(bad):
    with pytest.raises(RangeError) as exc:
        parse_time(bad, NOW)
    assert "now-6h" in str(exc.value)


def test_from_after_to_is_an_error_not_an_empty_page():
    with pytest.raises(RangeError, match="not before"):
        resolve("2026-03-02T06:00:00Z", "2026-03-02T00:00:00Z", NOW)
    with pytest.raises(RangeError, match="not before"):
        resolve("now", "now-1h", NOW)


def test_resolve_defaults_and_absolute_history():
    win = resolve(None, "", NOW)
    assert (win.from_expr, win.to_expr) == ("now-6h", "now")
    assert win.start == NOW - timedelta(hours=6) and win.end == NOW and win.is_live
    assert win.preset == "6h" and win.label == "Last 6 hours" and win.phrase == "in the last 6 hours"

    hist = resolve("2026-03-02T00:00:00Z", "2026-03-02T06:00:00Z", NOW)
    assert (hist.start, hist.end, hist.bucket_minutes) == (datetime(2026, 3, 2), datetime(2026, 3, 2, 6), 1)
    assert not hist.is_live and hist.preset is None
    assert hist.label == "2026-03-02 00:00 to 06:00 UTC"
    assert hist.phrase == "between 2026-03-02 00:00 and 06:00 UTC"
    assert hist.params() == {"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T06:00:00Z"}
    two_days = resolve("2026-03-01T00:00:00Z", "1772409600000", NOW)  # mixed forms
    assert two_days.label == "2026-03-01 00:00 to 2026-03-02 00:00 UTC"


@pytest.mark.parametrize(
    ("span", "bucket"),
    [
        (timedelta(minutes=15), 1),
        (timedelta(hours=1), 1),
        (timedelta(hours=6), 1),  # 360 points
        (timedelta(hours=6, minutes=1), 5),
        (timedelta(hours=24), 5),  # 288 points
        (timedelta(days=2), 10),
        (timedelta(days=7), 30),  # 336 points
        (timedelta(days=30), 120),
        (timedelta(days=365), 1440 * 2),
        (timedelta(seconds=10), 1),
    ],
)
def test_bucket_is_chosen_from_the_span(span, bucket):
    assert choose_bucket(span) == bucket
    assert span.total_seconds() / 60 / bucket <= ranges.MAX_POINTS or span < timedelta(minutes=1)


def test_presets_keep_their_buckets_and_spell_their_expressions():
    assert {k: r.bucket_minutes for k, r in RANGES.items() if k in ("1h", "6h", "24h", "7d")} == {
        "1h": 1,
        "6h": 1,
        "24h": 5,
        "7d": 30,
    }
    for key, r in RANGES.items():
        assert preset_for(r.from_expr, r.to_expr) == key
        assert resolve(r.from_expr, r.to_expr, NOW).bucket_minutes == r.bucket_minutes
    assert preset_for("now-6h", "now-1h") is None
    assert preset_for("now-5h", "now") is None


def test_jump_keeps_the_span_and_ends_just_after_the_newest_data():
    newest = datetime(2026, 3, 2, 5, 59, 0)  # the newest replayed window's start
    f, t = jump_to(newest, timedelta(hours=6))
    assert (f, t) == ("2026-03-02T00:00:00Z", "2026-03-02T06:00:00Z")
    win = resolve(f, t, NOW)
    assert win.start <= newest < win.end
    # a 7-day range in 30-minute buckets ends a whole bucket after it
    f, t = jump_to(datetime(2026, 3, 2, 5, 59, 30), timedelta(days=7), timedelta(minutes=30))
    assert t == "2026-03-02T06:29:00Z" and f == "2026-02-23T06:29:00Z"


def test_bounds_of_a_preset_and_of_a_window():
    assert ranges.bounds(RANGES["1h"], NOW) == (NOW - timedelta(hours=1), NOW)
    win = resolve("2026-03-02", "2026-03-03", NOW)
    assert ranges.bounds(win, NOW) == (datetime(2026, 3, 2), datetime(2026, 3, 3))
