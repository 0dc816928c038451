"""Live root-cause ranking converges to the batch answer (issue 13, `make local`'s error_surge:payments).

`make local`'s fault (seed 11, 20 requests/s, error_surge:payments at minute 28) was ranked on a
service with a trivial but significant slowdown (search: a few extra slow visits among thousands,
"+0 ms per visit"), because any added self time weighed as much as hundreds of own errors. The
signals now weigh by their excess abnormal visits (`root_cause.RootCauseRanker._score`).

The detector's live loop sees an incident while it is still forming: bronze holds the spans
up to about one minute past the watermark, and each cycle scores the windows that became
final. Here the generator's own spans for an error surge at payments arrive cycle by cycle
(bronze up to the watermark + 1 minute, as the Spark job writes it), the detector runs one
cycle per minute, and the stored ranking is compared with one batch run over the finished
data: the open incident is re-ranked as its windows arrive, and ends where the batch run ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import pandas as pd
import pytest

from anomaly_detection.evaluation.aggregate_duckdb import aggregate
from anomaly_detection.service import DetectionService
from observability import bronze, tables
from observability.settings import Settings
from observability.store import Store
from tests.spark_fixtures import ROOT

START = datetime(2025, 3, 3)
FAULT_AT, FAULT_MIN, RUN_MIN = 28, 8, 40  # as `make local` (tests/test_make_local.py)
LIVE_FROM = FAULT_AT - 1  # the backlog before the fault is scored in one cycle


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("gen") / "events.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "event_generator",
            "--seed",
            "11",
            "--rate",
            "20",
            "--start",
            START.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--duration",
            str(RUN_MIN * 60),
            "--speed",
            "max",
            "--anomaly-probability",
            "0",
            "--scenario",
            f"error_surge:payments@{FAULT_AT}+{FAULT_MIN}",
            "--to-file",
            str(out),
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TRANSPORT": "local", "DATA_DIR": str(out.parent)},
        check=True,
        capture_output=True,
    )
    df = pd.read_json(out, lines=True, dtype={"trace_id": str, "span_id": str, "parent_span_id": str})
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None)
    df["attributes"] = [json.dumps(a) if isinstance(a, dict) else None for a in df["attributes"]]
    return out, df


def _store(data_dir, events_file) -> tuple[Settings, Store]:
    settings = Settings(DATA_DIR=data_dir)
    store = Store.from_settings(settings)
    store.migrate()
    aggregate(store, events_file)
    store.execute(f"DELETE FROM {tables.STREAM_PROGRESS}")
    return settings, store


def _watermark(store: Store, minute: int) -> None:
    wm = START + timedelta(minutes=minute)
    store.execute(
        f"INSERT OR REPLACE INTO {tables.STREAM_PROGRESS} VALUES (?, ?, 0, 0, 0, ?, ?)",
        [minute, wm, wm + timedelta(minutes=1), wm],
    )


def _fault_incident(store: Store) -> pd.Series:
    inc = store.fetch_df(
        f"SELECT * FROM {tables.INCIDENTS} WHERE started_at <= ? AND coalesce(ended_at, ?) >= ? ORDER BY started_at",
        [
            START + timedelta(minutes=FAULT_AT + FAULT_MIN),
            START + timedelta(hours=9),
            START + timedelta(minutes=FAULT_AT),
        ],
    )
    assert len(inc) == 1, inc[["service", "started_at", "ended_at", "root_cause_service"]]
    return inc.iloc[0]


def _ranked(row) -> list[str]:
    return [c["service"] for c in json.loads(row["root_cause_candidates"] or "[]")]


@pytest.mark.e2e
def test_live_ranking_of_a_forming_incident_converges_to_the_batch_answer(generated, tmp_path):
    events_file, events = generated
    end = START + timedelta(minutes=RUN_MIN)
    batch_settings, batch = _store(tmp_path / "batch", events_file)
    bronze.write_events(batch_settings.bronze_dir, events)
    _watermark(batch, RUN_MIN)
    DetectionService(batch_settings, batch, bootstrap_models=False, publish=False).run_once()
    want = _fault_incident(batch)
    assert want["root_cause_service"] == "payments", _ranked(want)

    settings, live = _store(tmp_path / "live", events_file)
    detector = DetectionService(settings, live, bootstrap_models=False, publish=False)
    written = START - timedelta(hours=1)
    roots = {}
    # one cycle a minute while the incident forms and its onset passes, then the rest in one cycle
    for minute in [*range(LIVE_FROM, FAULT_AT + 7), RUN_MIN]:
        cut = min(START + timedelta(minutes=minute + 1), end)  # bronze runs about a minute ahead
        bronze.write_events(settings.bronze_dir, events[(events.timestamp >= written) & (events.timestamp < cut)])
        written = cut
        _watermark(live, minute)
        detector.run_once()
        inc = live.fetch_df(
            f"SELECT root_cause_service FROM {tables.INCIDENTS} WHERE started_at >= ?",
            [START + timedelta(minutes=FAULT_AT - 3)],
        )
        if len(inc):
            roots[minute] = inc.root_cause_service.iloc[0]
    got = _fault_incident(live)
    assert roots, "the live loop opened the fault's incident"
    assert got["root_cause_service"] == want["root_cause_service"] and _ranked(got) == _ranked(want), roots
    settled = [m for m in roots if m >= FAULT_AT + 5]
    assert all(roots[m] == "payments" for m in settled), roots
