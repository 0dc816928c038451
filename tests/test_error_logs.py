"""An incident's error logs (observability.error_logs): the lines the narrator's facts carry."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from llm.facts import build_facts
from observability import error_logs, tables
from tests.llm_fixtures import seed_scenario


def _log(t, service, body, severity_number=17, severity_text="ERROR", trace_id=None):
    return dict(
        timestamp=t,
        service=service,
        severity_text=severity_text,
        severity_number=severity_number,
        body=body,
        trace_id=trace_id,
        span_id=None,
        attributes=None,
    )


def test_top_error_lines_are_few_deduplicated_folded_and_truncated(store):
    from observability.store import utcnow

    t = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    long = "timeout calling ledger " + "x" * 400
    rows = (
        [_log(t + timedelta(seconds=i), "payments", "card declined") for i in range(4)]
        + [_log(t + timedelta(seconds=5 + i), "payments", "  card\n declined\t") for i in range(2)]  # same line, folded
        + [_log(t + timedelta(seconds=10 + i), "payments", long) for i in range(3)]
        + [_log(t + timedelta(seconds=20), "payments", "pool exhausted", severity_number=21, severity_text="FATAL")]
        + [_log(t + timedelta(seconds=21), "payments", "only text", severity_number=None, severity_text="error")]
        + [_log(t + timedelta(seconds=22), "payments", "just info", severity_number=9, severity_text="INFO")]
        + [
            _log(t + timedelta(seconds=23), "payments", "a warning", severity_number=13, severity_text="ERROR")
        ]  # the number wins
        + [_log(t + timedelta(seconds=24), "search", "card declined")]  # another service
        + [_log(t - timedelta(hours=1), "payments", "old failure")]  # before the range
    )
    store.insert_df(tables.LOGS, pd.DataFrame(rows))
    top = error_logs.top_error_lines(store, "payments", t, t + timedelta(minutes=5), limit=3)
    cut = long[: error_logs.MAX_LINE_CHARS - 3] + "..."
    assert top == [("card declined", 6), (cut, 3), ("only text", 1)]  # tie: the most recent first
    assert len(top[1][0]) == error_logs.MAX_LINE_CHARS
    everything = dict(error_logs.top_error_lines(store, "payments", t, t + timedelta(minutes=5), limit=10))
    assert set(everything) == {"card declined", cut, "pool exhausted", "only text"}


def test_facts_carry_the_top_error_log_lines_only_when_there_are_some(store, settings):
    incident = seed_scenario(store, settings.bronze_dir, "payments", related=["checkout"], root_cause="database")
    assert "error_logs" not in build_facts(store, incident, settings.bronze_dir).lines  # no OTLP logs: no line
    started = store.fetch_one(f"SELECT started_at FROM {tables.INCIDENTS} WHERE id = ?", [incident])[0]
    rows = [_log(started + timedelta(seconds=10 + i), "payments", "ledger write failed: deadlock") for i in range(3)]
    rows += [_log(started + timedelta(seconds=20), "payments", "fraud check unavailable")]
    rows += [_log(started + timedelta(seconds=30), "checkout", "not this service")]
    store.insert_df(tables.LOGS, pd.DataFrame(rows))
    lines = build_facts(store, incident, settings.bronze_dir).lines
    assert lines["error_logs"] == '"ledger write failed: deadlock" (3 times); "fraud check unavailable" (1 times)'
    keys = list(lines)
    assert keys.index("error_logs") == keys.index("top_errors") + 1
