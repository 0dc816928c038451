"""`evaluate scenarios`: generator scenarios -> pipeline -> detector -> precision, recall, F1, delay.

Stages meet only at data contracts, so everything runs as the user would run it:
the generator (`python -m event_generator`) as a subprocess, the Spark job
(`python -m spark.streaming_job --available-now`) or, with `--aggregator duckdb`,
a DuckDB GROUP BY over the generated events, then `python -m anomaly_detection.detector --once`.

Two runs, each in its own DATA_DIR under the work directory:

1. clean: `--clean-hours` (default 24) of traffic with ANOMALY_PROBABILITY=0. The
   detector runs over it (training and promoting its first models on the way,
   as in production); every incident is a false alert -> false alerts per
   service-day = incidents / (services x days).
2. scenarios: a warm-up, then each named scenario in turn with quiet time
   between; the models promoted in the clean run are carried over.

Definitions (labels: one row per (scenario, service that shows it)):
- a label is *detected* when an anomaly of that service has a window overlapping
  [start, end + tolerance]; recall = detected labels / labels;
- delay = end of the first such anomaly window - scenario start (event time; a
  window is final one watermark later in production);
- an incident is a *true positive* when it overlaps a label of its service, or of
  the label's root service, within the tolerance; precision = true-positive
  incidents / incidents (an incident overlapping no label is a false alert). Per
  type, a false alert counts against the scenario nearest in time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from observability import tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store

log = get_logger(__name__)
TOLERANCE = timedelta(minutes=2)
DEFAULT_SCENARIOS = (
    "error_surge:payments",
    "error_surge:database",
    "latency_spike:checkout",
    "latency_spike:search",
    "latency_drift:payments",
    "latency_drift:search",
    "traffic_drop:checkout",
    "traffic_drop:search",
    "cascade:database",
    "error_surge:search",
)
DURATIONS = {"latency_drift": 20}


@dataclass
class Plan:
    start: datetime
    warmup_min: int
    spacing_min: int
    scenarios: tuple[str, ...]

    def specs(self) -> list[str]:
        out = []
        for i, s in enumerate(self.scenarios):
            at = self.warmup_min + i * self.spacing_min
            out.append(f"{s}@{at}+{DURATIONS.get(s.split(':')[0], 10)}")
        return out

    @property
    def duration_s(self) -> int:
        return (self.warmup_min + len(self.scenarios) * self.spacing_min) * 60


def _env(data_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"DATA_DIR": str(data_dir), "TRANSPORT": "local", "PYTHONUNBUFFERED": "1"})
    env.pop("DUCKDB_PATH", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(cmd: list[str], env: dict, what: str) -> str:
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
    log.info("step done", step=what, seconds=round(time.monotonic() - started, 1))
    return proc.stdout


def produce(
    data_dir: Path, *, seed: int, start: datetime, duration_s: int, specs: list[str], aggregator: str, clean: bool
) -> None:
    """Generate events and roll them into the window tables with the chosen aggregator."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = _env(data_dir, ANOMALY_PROBABILITY=0)
    py = sys.executable
    gen = [
        py,
        "-m",
        "event_generator",
        "--seed",
        str(seed),
        "--start",
        start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--duration",
        str(duration_s),
        "--speed",
        "max",
    ]
    for s in specs:
        gen += ["--scenario", s]
    store = Store.from_settings(Settings(DATA_DIR=data_dir))
    store.migrate()
    if aggregator == "spark":
        _run(gen, env, "generator")
        _run([py, "-m", "spark.streaming_job", "--available-now"], env, "spark job")
        _final_watermark(store, start + timedelta(seconds=duration_s))
    else:
        from anomaly_detection.evaluation.aggregate_duckdb import aggregate

        events = data_dir / "events.jsonl"
        _run(gen + ["--to-file", str(events)], env, "generator")
        aggregate(store, events)
        labels_file = data_dir / "events.labels.jsonl"
        if labels_file.exists() and store.fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}")[0] == 0:
            rows = [json.loads(line) for line in labels_file.read_text().splitlines() if line.strip()]
            if rows:
                df = pd.DataFrame(rows)[
                    ["id", "scenario_type", "service", "root_service", "start_time", "end_time", "created_at"]
                ]
                for c in ("start_time", "end_time", "created_at"):
                    df[c] = pd.to_datetime(df[c], utc=True).dt.tz_localize(None)
                store.insert_df(tables.SCENARIO_LABELS, df, upsert=True)
        events.unlink(missing_ok=True)


def _final_watermark(store: Store, run_end: datetime) -> None:
    """After a bounded run every window inside it is complete: advance the watermark to its end.

    (A stream's watermark trails its newest event; at the end of a finite input
    nothing later can arrive. The minute after the run holds only the child spans
    of its last traces, a partial window, so it is not made final.)
    """
    row = store.fetch_one(f"SELECT max(window_end) FROM {tables.SERVICE_METRICS} WHERE window_end <= ?", [run_end])
    wm = store.fetch_one(f"SELECT max(watermark) FROM {tables.STREAM_PROGRESS}")
    if row and row[0] is not None and (wm is None or wm[0] is None or wm[0] < row[0]):
        store.execute(
            f"INSERT INTO {tables.STREAM_PROGRESS} VALUES ((SELECT coalesce(max(batch_id), 0) + 1000000 FROM {tables.STREAM_PROGRESS}), now()::TIMESTAMP, 0, 0, 0, ?, ?)",
            [row[0], row[0]],
        )


def detect(data_dir: Path, bootstrap: bool) -> str:
    cmd = [sys.executable, "-m", "anomaly_detection.detector", "--once", "--no-publish"] + (
        [] if bootstrap else ["--no-bootstrap"]
    )
    return _run(cmd, _env(data_dir), "detector --once").strip()


def carry_models(src: Path, dst: Path) -> int:
    """Copy the promoted models (files and registry rows) of one run into another."""
    s_src, s_dst = Store.from_settings(Settings(DATA_DIR=src)), Store.from_settings(Settings(DATA_DIR=dst))
    rows = s_src.fetch_df(f"SELECT * FROM {tables.MODEL_REGISTRY} WHERE promoted")
    if rows.empty:
        return 0
    if (src / "models").exists():
        shutil.copytree(src / "models", dst / "models", dirs_exist_ok=True)
    s_dst.migrate()
    s_dst.insert_df(tables.MODEL_REGISTRY, rows, upsert=True)
    return len(rows)


# -- scoring -------------------------------------------------------------------------
def score_run(store: Store) -> pd.DataFrame:
    labels = store.fetch_df(f"SELECT * FROM {tables.SCENARIO_LABELS}")
    anomalies = store.fetch_df(f"SELECT service, window_start, window_end FROM {tables.ANOMALIES}")
    incidents = store.fetch_df(
        f"SELECT id, service, started_at, coalesce(ended_at, started_at + INTERVAL 1 hour) AS ended_at, root_cause_service, related_services FROM {tables.INCIDENTS}"
    )
    m = compute_metrics(labels, anomalies, incidents)
    rc = root_cause_by_type(labels, incidents)
    return m.join(rc, how="left") if len(m) else m


def root_cause_by_type(labels: pd.DataFrame, incidents: pd.DataFrame, tol: timedelta = TOLERANCE) -> pd.DataFrame:
    """Per scenario type (and `all`): scenarios, root-cause accuracy and median incidents per scenario.

    A scenario is one injection (its labels share type, root service and start). Its incidents
    are those overlapping it in time (within `tol`) whose services (its own or related) include
    one of the scenario's; the root cause is right when the earliest of them names the root service.
    """
    cols = ["scenarios", "rca_accuracy", "incidents_per_scenario"]
    if labels.empty:
        return pd.DataFrame(columns=cols)
    per = []
    for (kind, root, start), g in labels.groupby(["scenario_type", "root_service", "start_time"]):
        services = set(g["service"]) | {root}
        end = g["end_time"].max()
        hits = []
        for inc in incidents.sort_values("started_at").itertuples(index=False):
            related = inc.related_services if inc.related_services is not None else []
            if inc.started_at <= end + tol and inc.ended_at + tol >= start and services & {inc.service, *related}:
                hits.append(inc)
        per.append((kind, bool(hits) and hits[0].root_cause_service == root, len(hits)))
    df = pd.DataFrame(per, columns=["type", "right", "n"])
    out = df.groupby("type").agg(
        scenarios=("n", "size"), rca_accuracy=("right", "mean"), incidents_per_scenario=("n", "median")
    )
    out.loc["all"] = [len(df), df["right"].mean(), df["n"].median()]
    return out[cols]


def compute_metrics(
    labels: pd.DataFrame, anomalies: pd.DataFrame, incidents: pd.DataFrame, tol: timedelta = TOLERANCE
) -> pd.DataFrame:
    """Per scenario type: labels, detected, recall, incidents, true/false, precision, F1, median delay."""
    rows = {}
    per_label = []
    for lab in labels.itertuples(index=False):
        a = anomalies[
            (anomalies["service"] == lab.service)
            & (anomalies["window_end"] > lab.start_time)
            & (anomalies["window_start"] <= lab.end_time + tol)
        ]
        delay = (a["window_end"].min() - lab.start_time).total_seconds() if len(a) else None
        per_label.append((lab.scenario_type, delay))
    inc_type = []
    for inc in incidents.itertuples(index=False):
        hit = labels[
            ((labels["service"] == inc.service) | (labels["root_service"] == inc.service))
            & (labels["start_time"] <= inc.ended_at + tol)
            & (labels["end_time"] + tol >= inc.started_at)
        ]
        if len(hit):
            inc_type.append((hit["scenario_type"].iloc[0], True))
        elif len(labels):
            gap = (labels["start_time"] - inc.started_at).abs()
            inc_type.append((labels.loc[gap.idxmin(), "scenario_type"], False))
        else:
            inc_type.append(("none", False))
    types = sorted(set(labels["scenario_type"]) | {t for t, _ in inc_type})
    for t in types:
        delays = [d for tt, d in per_label if tt == t]
        found = [d for d in delays if d is not None]
        tp = sum(1 for tt, ok in inc_type if tt == t and ok)
        fp = sum(1 for tt, ok in inc_type if tt == t and not ok)
        recall = len(found) / len(delays) if delays else float("nan")
        precision = tp / (tp + fp) if tp + fp else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        rows[t] = {
            "labels": len(delays),
            "detected": len(found),
            "recall": recall,
            "incidents": tp + fp,
            "false_alerts": fp,
            "precision": precision,
            "f1": f1,
            "median_delay_s": float(np.median([max(0.0, d) for d in found])) if found else float("nan"),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        lab_n, det_n = out["labels"].sum(), out["detected"].sum()
        inc_n, fp_n = out["incidents"].sum(), out["false_alerts"].sum()
        r = det_n / lab_n if lab_n else float("nan")
        p = (inc_n - fp_n) / inc_n if inc_n else float("nan")
        all_found = [max(0.0, d) for _, d in per_label if d is not None]
        out.loc["all"] = {
            "labels": lab_n,
            "detected": det_n,
            "recall": r,
            "incidents": inc_n,
            "false_alerts": fp_n,
            "precision": p,
            "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
            "median_delay_s": float(np.median(all_found)) if all_found else float("nan"),
        }
    return out


def clean_false_alerts(store: Store) -> dict:
    services, windows = store.fetch_one(f"SELECT count(DISTINCT service), count(*) FROM {tables.SERVICE_METRICS}")
    incidents = store.fetch_one(f"SELECT count(*) FROM {tables.INCIDENTS}")[0]
    anomalies = store.fetch_one(f"SELECT count(*) FROM {tables.ANOMALIES}")[0]
    service_days = (windows or 0) / 1440.0
    return {
        "services": services,
        "windows": windows,
        "incidents": incidents,
        "anomalies": anomalies,
        "service_days": round(service_days, 2),
        "false_alerts_per_service_day": round(incidents / service_days, 3) if service_days else float("nan"),
    }


def run(
    workdir: Path,
    *,
    seed: int,
    aggregator: str,
    clean_hours: float,
    warmup_min: int,
    spacing_min: int,
    scenarios: tuple[str, ...],
) -> dict:
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    start = datetime(2025, 1, 6, 0, 0)
    clean_dir, scen_dir = workdir / "clean", workdir / "scenarios"
    produce(
        clean_dir,
        seed=seed,
        start=start,
        duration_s=int(clean_hours * 3600),
        specs=[],
        aggregator=aggregator,
        clean=True,
    )
    clean_summary = detect(clean_dir, bootstrap=True)
    clean = clean_false_alerts(Store.from_settings(Settings(DATA_DIR=clean_dir)))
    plan = Plan(start + timedelta(days=2), warmup_min, spacing_min, scenarios)
    produce(
        scen_dir,
        seed=seed + 1,
        start=plan.start,
        duration_s=plan.duration_s,
        specs=plan.specs(),
        aggregator=aggregator,
        clean=False,
    )
    carried = carry_models(clean_dir, scen_dir)
    scen_summary = detect(scen_dir, bootstrap=False)
    metrics = score_run(Store.from_settings(Settings(DATA_DIR=scen_dir)))
    return {
        "clean": clean,
        "metrics": metrics,
        "models_carried": carried,
        "detector": [clean_summary, scen_summary],
        "specs": plan.specs(),
    }


def report(result: dict) -> str:
    m = result["metrics"]
    lines = [
        f"scenarios: {' '.join(result['specs'])}",
        f"models carried from the clean run: {result['models_carried']}",
    ]
    lines.append(
        f"{'type':<15}{'labels':>7}{'found':>6}{'recall':>8}{'incid.':>7}{'false':>6}{'precision':>10}{'f1':>6}{'median_delay_s':>15}"
    )
    for t, r in m.iterrows():
        lines.append(
            f"{t:<15}{int(r.labels):>7}{int(r.detected):>6}{r.recall:>8.2f}{int(r.incidents):>7}{int(r.false_alerts):>6}"
            f"{r.precision:>10.2f}{r.f1:>6.2f}{r.median_delay_s:>15.0f}"
        )
    if "rca_accuracy" in m.columns:
        lines.append(f"{'type':<15}{'scenarios':>10}{'root_cause_right':>18}{'incidents_per_scenario':>24}")
        for t, r in m.dropna(subset=["scenarios"]).iterrows():
            lines.append(f"{t:<15}{int(r.scenarios):>10}{r.rca_accuracy:>18.2f}{r.incidents_per_scenario:>24.1f}")
    c = result["clean"]
    lines.append(
        f"clean traffic: {c['service_days']} service-days, {c['incidents']} incidents, {c['anomalies']} anomalous windows -> "
        f"false_alerts_per_service_day={c['false_alerts_per_service_day']}"
    )
    if "all" in m.index:
        a = m.loc["all"]
        lines.append(
            f"scenario_recall={a.recall:.3f} scenario_precision={a.precision:.3f} scenario_f1={a.f1:.3f} "
            f"median_delay_s={a.median_delay_s:.0f} false_alerts_per_service_day={c['false_alerts_per_service_day']}"
        )
        if "rca_accuracy" in m.columns and pd.notna(a.get("rca_accuracy")):
            lines.append(
                f"scenario_rca_accuracy={a.rca_accuracy:.3f} incidents_per_scenario={a.incidents_per_scenario:.1f}"
            )
    return "\n".join(lines)
