"""`evaluate forecast`: the forecaster's accuracy as MASE, beside the seasonal-naive forecast's.

Protocol (rolling origin, the forecaster's own code path): for each origin, fit
`anomaly_detection.forecasting.forecast` on the FORECAST_HISTORY_DAYS of
5-minute buckets before it and forecast the next hour (12 steps). Each error is
scaled by the series' in-sample seasonal-naive MAE over that history (one-day
season, 288 buckets): MASE = MAE(forecast) / MAE(in-sample y_t - y_t-288). The
seasonal-naive forecast (the value one day earlier) is scored the same way, so
"MASE < 1" means better than repeating yesterday in-sample, and the ratio of the
two is the gain over the seasonal-naive forecast itself. Goal: MASE below 0.9.

Data: generator traffic (no injected scenarios) rolled into 1-minute windows by
the DuckDB stand-in aggregator, then bucketed exactly as the forecaster does;
and the NAB series that fit (5-minute steps, at least history + one day).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_detection import forecasting
from anomaly_detection.forecasting import HORIZON_STEPS, SEASON_BUCKETS, SeriesKey
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store

log = get_logger(__name__)
GOAL = 0.9
NAB_GROUPS = ("realAWSCloudwatch", "realKnownCause", "realTraffic", "realAdExchange", "artificialNoAnomaly")


@dataclass
class Scores:
    """Per (source, metric): mean MASE of the forecaster and of the seasonal-naive forecast over series x origins."""

    rows: pd.DataFrame  # source, metric, series, origin, mase_model, mase_snaive, coverage

    def summary(self) -> pd.DataFrame:
        g = self.rows.groupby(["source", "metric"])
        out = g.agg(
            series=("series", "nunique"),
            origins=("origin", "nunique"),
            mase=("mase_model", "mean"),
            mase_snaive=("mase_snaive", "mean"),
            coverage=("coverage", "mean"),
        ).reset_index()
        out["ratio"] = out["mase"] / out["mase_snaive"]
        return out


def score_origins(
    history: dict[SeriesKey, pd.Series],
    origins: list[pd.Timestamp],
    *,
    history_buckets: int,
    level: int = 90,
    source: str = "",
) -> pd.DataFrame:
    """MASE of forecaster and seasonal naive at each origin (one batched fit per origin)."""
    rows = []
    for origin in origins:
        train: dict[SeriesKey, pd.Series] = {}
        for key, s in history.items():
            t = s[(s.index < origin) & (s.index >= origin - pd.Timedelta(minutes=5 * history_buckets))]
            actual = s[(s.index >= origin)].iloc[:HORIZON_STEPS]
            if len(t) >= 2 * SEASON_BUCKETS and len(actual) == HORIZON_STEPS:
                train[key] = t
        if not train:
            continue
        fc, _ = forecasting.forecast(train, level=level)
        for key, t in train.items():
            s = history[key]
            actual = s[s.index >= origin].iloc[:HORIZON_STEPS]
            f = fc[(fc["service"] == key.service) & (fc["metric"] == key.metric)].set_index("target_time")
            if len(f) != HORIZON_STEPS:
                continue
            y = t.to_numpy()
            scale = float(np.mean(np.abs(y[SEASON_BUCKETS:] - y[:-SEASON_BUCKETS])))
            if not np.isfinite(scale) or scale <= 0:
                continue
            snaive = s.reindex(actual.index - pd.Timedelta(days=1)).to_numpy()
            a = actual.to_numpy()
            pred = f["predicted"].reindex(actual.index).to_numpy()
            inside = (a >= f["lower"].reindex(actual.index).to_numpy()) & (
                a <= f["upper"].reindex(actual.index).to_numpy()
            )
            rows.append(
                dict(
                    source=source,
                    metric=key.metric,
                    series=key.service,
                    origin=origin,
                    mase_model=float(np.mean(np.abs(a - pred)) / scale),
                    mase_snaive=float(np.nanmean(np.abs(a - snaive)) / scale),
                    coverage=float(inside.mean()),
                )
            )
    return pd.DataFrame(rows)


def _hourly_origins(first: pd.Timestamp, last: pd.Timestamp, every_hours: float) -> list[pd.Timestamp]:
    out, t = [], first
    while t <= last:
        out.append(t)
        t += pd.Timedelta(hours=every_hours)
    return out


def generator_history(workdir: Path, *, days: float, rate: float, seed: int) -> dict[SeriesKey, pd.Series]:
    """Generate `days` of clean traffic, aggregate it to 1-minute windows, bucket it like the forecaster."""
    from anomaly_detection.evaluation.aggregate_duckdb import aggregate

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "observability.duckdb"
    db.unlink(missing_ok=True)
    events = workdir / "events.jsonl"
    start = datetime(2026, 1, 5, tzinfo=UTC)
    cmd = [
        sys.executable,
        "-m",
        "event_generator",
        "--seed",
        str(seed),
        "--start",
        start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--duration",
        str(int(days * 86400)),
        "--speed",
        "max",
        "--rate",
        str(rate),
        "--anomaly-probability",
        "0",
        "--to-file",
        str(events),
    ]
    env = {**__import__("os").environ, "DATA_DIR": str(workdir), "TRANSPORT": "local"}
    env.pop("DUCKDB_PATH", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"generator failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
    store = Store.from_settings(Settings(DATA_DIR=workdir))
    store.migrate()
    aggregate(store, events)
    events.unlink(missing_ok=True)
    minutes = store.fetch_df("SELECT * FROM service_metrics ORDER BY service, window_start")
    end = pd.Timestamp(start.replace(tzinfo=None)) + pd.Timedelta(days=days)
    return forecasting.series(forecasting.buckets(minutes, end.to_pydatetime()))


def nab_history(data_root: Path, min_buckets: int) -> dict[SeriesKey, pd.Series]:
    """NAB series with 5-minute steps and at least `min_buckets` values (metric: the NAB group)."""
    out: dict[SeriesKey, pd.Series] = {}
    root = Path(data_root) / "data"
    for group in NAB_GROUPS:
        for path in sorted((root / group).glob("*.csv")):
            df = pd.read_csv(path)
            ts = pd.to_datetime(df["timestamp"])
            steps = ts.diff().dropna()
            if steps.empty or steps.median() != pd.Timedelta(minutes=5):
                continue
            s = pd.Series(df["value"].astype(float).to_numpy(), index=ts).groupby(level=0).mean()
            s = s.resample("5min").mean().interpolate(limit_direction="both")
            if len(s) >= min_buckets:
                # metric "nab" keeps values as they are (no log transform: some NAB series go negative)
                out[SeriesKey(f"{group}/{path.stem}", "nab")] = s
    return out


def run(
    workdir: Path,
    *,
    days: float = 4.0,
    rate: float = 2.0,
    seed: int = 11,
    history_days: float = 3.0,
    origin_every_hours: float = 1.0,
    nab_data: Path | None = None,
    level: int = 90,
) -> Scores:
    history_buckets = int(history_days * SEASON_BUCKETS)
    gen = generator_history(workdir, days=days, rate=rate, seed=seed)
    first = min(s.index.min() for s in gen.values()) + pd.Timedelta(days=history_days)
    last = max(s.index.max() for s in gen.values()) - pd.Timedelta(minutes=5 * HORIZON_STEPS)
    origins = _hourly_origins(first, last, origin_every_hours)
    log.info("forecast evaluation: generator", series=len(gen), origins=len(origins))
    parts = [score_origins(gen, origins, history_buckets=history_buckets, level=level, source="generator")]
    if nab_data is not None and Path(nab_data).exists():
        nab = nab_history(nab_data, history_buckets + SEASON_BUCKETS)
        for key, s in nab.items():
            # the last day of each series, hourly origins, the same history length
            o = _hourly_origins(
                s.index.max() - pd.Timedelta(days=1), s.index.max() - pd.Timedelta(hours=1), origin_every_hours
            )
            parts.append(score_origins({key: s}, o, history_buckets=history_buckets, level=level, source="nab"))
    rows = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    return Scores(rows)


def report(scores: Scores) -> str:
    s = scores.summary()
    lines = [
        "source     metric            series origins   MASE  MASE(snaive)  ratio  coverage",
    ]
    for r in s.itertuples():
        lines.append(
            f"{r.source:10s} {r.metric:16s} {r.series:6d} {r.origins:7d} {r.mase:6.3f} {r.mase_snaive:13.3f} "
            f"{r.ratio:6.3f} {r.coverage:9.2f}"
        )
    gen = scores.rows[scores.rows["source"] == "generator"]
    overall = float(gen["mase_model"].mean()) if len(gen) else float("nan")
    overall_sn = float(gen["mase_snaive"].mean()) if len(gen) else float("nan")
    lines.append(
        f"forecast summary: generator_mase={overall:.3f} generator_mase_snaive={overall_sn:.3f} goal<{GOAL} "
        f"{'met' if overall < GOAL else 'NOT met'}"
    )
    nab = scores.rows[scores.rows["source"] == "nab"]
    if len(nab):
        lines.append(
            f"forecast summary: nab_mase={nab['mase_model'].mean():.3f} nab_mase_snaive={nab['mase_snaive'].mean():.3f} "
            f"series={nab['series'].nunique()}"
        )
    return "\n".join(lines)


def to_json(scores: Scores) -> str:
    return json.dumps(scores.summary().to_dict(orient="records"), default=str)
