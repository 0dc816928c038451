"""`evaluate rca`: a recorded day through the platform's own ingest path, then root-cause scoring.

Every stage runs as the user would run it, as a subprocess on a fresh DATA_DIR:
the converted events are replayed (`python -m event_generator --replay`), the
Spark job rolls them up (`--available-now`, bronze included), then
`python -m anomaly_detection.detector --once`. The day keeps its own
timestamps (January 2023): nothing in the pipeline reads the wall clock to
decide what is final, only the stream's watermark.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd

from anomaly_detection import root_cause
from anomaly_detection.evaluation import nezha, rca, scenarios
from anomaly_detection.root_cause import RootCauseRanker
from observability import tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store

log = get_logger(__name__)
DAY = "2023-01-30"


def find_day(data: Path, day: str | None = None) -> tuple[Path, Path]:
    """(rca_data/<day>, construct_data/<day>) of a Nezha dataset folder."""
    data = Path(data)
    days = sorted(p.name for p in (data / "rca_data").iterdir() if p.is_dir()) if (data / "rca_data").is_dir() else []
    if not days:
        raise FileNotFoundError(f"{data}: no rca_data/<day> folder (see the dataset's README.md)")
    day = day or days[0]
    return data / "rca_data" / day, data / "construct_data" / day


def ingest(events_file: Path, data_dir: Path, run_end) -> dict:
    """Replay the events file into the local log, then the Spark job over all of it."""
    env = scenarios._env(data_dir)
    py = sys.executable
    t0 = time.monotonic()
    out = scenarios._run([py, "-m", "event_generator", "--replay", str(events_file)], env, "replay")
    t1 = time.monotonic()
    spark = scenarios._run([py, "-m", "spark.streaming_job", "--available-now"], env, "spark job")
    t2 = time.monotonic()
    store = Store.from_settings(Settings(DATA_DIR=data_dir))
    # A bounded input has ended: the job's final flush (spark/final_flush.py) made every window up
    # to the last recorded minute final; nothing here moves the watermark.
    watermark = store.fetch_one(f"SELECT max(watermark) FROM {tables.STREAM_PROGRESS}")[0]
    if watermark is None or watermark < run_end:
        log.warning("the final flush left windows open", watermark=str(watermark), run_end=str(run_end))
    return {
        "replay": out.strip().splitlines()[-1:],
        "spark": spark.strip().splitlines()[-1:],
        "replay_s": round(t1 - t0, 1),
        "spark_s": round(t2 - t1, 1),
    }


def incidents_frame(store: Store) -> pd.DataFrame:
    """Incidents with ended_at filled: an open one ends at its last anomalous window."""
    cols = [r[0] for r in store.fetch_all(f"DESCRIBE {tables.INCIDENTS}")]
    extra = ", root_cause_candidates" if "root_cause_candidates" in cols else ""
    return store.fetch_df(
        f"""SELECT i.id, i.service, i.started_at, i.status, i.peak_severity, i.root_cause_service, i.related_services{extra},
                   coalesce(i.ended_at, (SELECT max(a.window_end) FROM {tables.ANOMALIES} a
                                         WHERE a.service = i.service AND a.window_start >= i.started_at), i.started_at) AS ended_at
            FROM {tables.INCIDENTS} i ORDER BY i.started_at"""
    )


def run(
    data: Path, workdir: Path, *, faults_subset: int | None = None, day: str | None = None
) -> tuple[rca.RcaResult, dict]:
    """Load the day (or its first `faults_subset` fault blocks), run the pipeline, score it."""
    day_dir, construct_dir = find_day(data, day)
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    faults = nezha.read_faults(day_dir)
    only = set(range(faults_subset)) if faults_subset else None
    events_file = workdir / "events.jsonl"
    n, first, last = nezha.write_jsonl(nezha.day_events(day_dir, construct_dir, only), events_file)
    faults = [f for f in faults if first <= f.start <= last]
    info = {"events": n, "first": first, "last": last}
    # the last minute with recorded trace starts (later minutes hold only child spans of its traces)
    run_end = pd.Timestamp(nezha.last_trace_start(events_file)).floor("min").to_pydatetime() + timedelta(minutes=1)
    info.update(ingest(events_file, data_dir, run_end))
    t0 = time.monotonic()
    info["detector"] = scenarios.detect(data_dir, bootstrap=False).splitlines()[-1:]
    info["detector_s"] = round(time.monotonic() - t0, 1)
    store = Store.from_settings(Settings(DATA_DIR=data_dir))
    result = rca.evaluate(faults, incidents_frame(store))
    info["faults"] = faults
    info["anomalies"] = store.fetch_one(f"SELECT count(*) FROM {tables.ANOMALIES}")[0]
    return result, info


# -- sensitivity: the same incidents re-ranked with other hyperparameters ---------------
SENSITIVITY = {
    "slow_mads": (2.0, 3.0, 4.0),
    "min_z": (2.0, 3.0, 4.0),
    "error_weight": (0.0, 0.5, 1.0),
    "lookback": (timedelta(minutes=30), timedelta(minutes=60), timedelta(minutes=120)),
    "onset_slack": (timedelta(0), timedelta(minutes=2), timedelta(minutes=4)),
    "min_span": (timedelta(minutes=1), timedelta(minutes=3), timedelta(minutes=5)),
    "onset_horizon": (timedelta(minutes=3), timedelta(minutes=5), timedelta(minutes=10)),
}


def rerank(
    incidents: pd.DataFrame, bronze_dir: Path, ranker: RootCauseRanker, span_visits: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The incidents with root_cause_candidates recomputed by `ranker` (nothing is written)."""
    if span_visits is None:
        lo, hi = incidents["started_at"].min(), incidents["ended_at"].max()
        span_visits = root_cause.visits(
            root_cause.read_spans(bronze_dir, lo - timedelta(hours=3), hi + timedelta(minutes=10))
        )
    out = incidents.copy()
    out["root_cause_candidates"] = [
        json.dumps([c.as_dict() for c in ranker.rank_visits(span_visits, r.started_at, r.ended_at)])
        for r in out.itertuples(index=False)
    ]
    return out


def sensitivity(workdir: Path, faults) -> list[tuple[str, str, float, float]]:
    """(parameter, value, AS@1, AS@3) varying one hyperparameter at a time around the defaults."""
    store = Store.from_settings(Settings(DATA_DIR=Path(workdir) / "data"))
    incidents = incidents_frame(store)
    if incidents.empty:
        return []
    bronze_dir = Settings(DATA_DIR=Path(workdir) / "data").bronze_dir
    lo, hi = incidents["started_at"].min(), incidents["ended_at"].max()
    span_visits = root_cause.visits(
        root_cause.read_spans(bronze_dir, lo - timedelta(hours=3), hi + timedelta(minutes=10))
    )
    rows = []
    for name, values in SENSITIVITY.items():
        for value in values:
            r = rca.evaluate(faults, rerank(incidents, bronze_dir, RootCauseRanker(**{name: value}), span_visits))
            shown = f"{value.total_seconds() / 60:g} min" if isinstance(value, timedelta) else f"{value:g}"
            rows.append((name, shown, r.accuracy_at(1), r.accuracy_at(3)))
    return rows
