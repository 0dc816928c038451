"""NAB's published scoring, reproduced: sweeper, corpus-wide threshold, normalisation.

Follows numenta/NAB v1.1 (`nab/sweeper.py`, `nab/optimizer.py`, `nab/runner.py`):

- Each row is scored as if it were a detection (`sweep_rows`): inside a labelled
  window by the scaled sigmoid of its relative position (earliest = +tpWeight),
  outside by fpWeight times the scaled sigmoid of its distance past the end of the
  preceding window (-fpWeight when no window precedes it). Rows of the
  probationary period (the first min(15 % of rows, 750)) are not scored.
- `scores_by_threshold` sweeps thresholds from the highest anomaly score down;
  a window counts its best (= first-ranked) detection once, every window without
  a detection costs fnWeight, false positives add up.
- The threshold is optimised per profile over the whole corpus at once, then each
  file is scored at that threshold and the scores are summed.
- Normalised score = 100 * (raw - null) / (perfect - null), null = the same
  procedure for a detector that never fires, perfect = number of labelled
  anomalies * tpWeight.

One deliberate deviation: where NAB's per-file lookup finds no row (every score of
the file is above the threshold) it crashes; here that file counts as all rows
detected, which is what the threshold means.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PROBATION_PERCENT = 0.15


@dataclass(frozen=True)
class Row:
    """One row of a result file, as the sweeper sees it (NAB's AnomalyPoint)."""

    anomaly_score: float
    sweep_score: float
    window: str | None  # window name, None outside windows, "probationary"


@dataclass(frozen=True)
class ThresholdScore:
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int


def scaled_sigmoid(relative_position: float) -> float:
    if relative_position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * relative_position)) - 1.0


def probation_length(n: int, percent: float = PROBATION_PERCENT) -> float:
    return min(math.floor(percent * n), percent * 5000)


def sweep_rows(timestamps, scores, windows, name: str, cost: dict, probation: float = PROBATION_PERCENT) -> list[Row]:
    """NAB `Sweeper.calcSweepScore`: every row's score were it a detection."""
    ts = list(pd.to_datetime(pd.Series(timestamps)))
    limits = [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in windows]
    index = {t: i for i, t in reversed(list(enumerate(ts)))}  # first occurrence, like list.index
    max_tp = scaled_sigmoid(-1.0)
    plen = probation_length(len(ts), probation)
    out: list[Row] = []
    cur = cur_name = None
    cur_width = cur_right = prev_width = prev_right = None
    for i, (t, s) in enumerate(zip(ts, scores)):
        if limits and t == limits[0][0]:
            cur = limits.pop(0)
            cur_name = f"{name}|{cur[0]}"
            cur_right = index[cur[1]]
            cur_width = float(cur_right - index[cur[0]] + 1)
        if cur is not None:
            pos = -(cur_right - i + 1) / cur_width
            weighted = scaled_sigmoid(pos) * cost["tpWeight"] / max_tp
        else:
            past = 3.0 if prev_right is None else abs(prev_right - i) / float(prev_width - 1)
            weighted = scaled_sigmoid(past) * cost["fpWeight"]
        out.append(Row(float(s), weighted, cur_name if i >= plen else "probationary"))
        if cur is not None and t == cur[1]:
            prev_right, prev_width = i, cur_width
            cur = cur_name = cur_width = cur_right = None
    return out


def scores_by_threshold(rows: list[Row], cost: dict) -> list[ThresholdScore]:
    """NAB `Sweeper.calcScoreByThreshold`: totals at every distinct threshold, highest first."""
    scorable = sorted((r for r in rows if r.window != "probationary"), key=lambda r: r.anomaly_score, reverse=True)
    parts: dict[str, float] = {"fp": 0.0}
    for r in scorable:
        if r.window is not None:
            parts[r.window] = -cost["fnWeight"]
    tn = sum(1 for r in scorable if r.window is None)
    fn = len(scorable) - tn
    tp = fp = 0
    out: list[ThresholdScore] = []
    threshold = 1.1
    for r in scorable:
        if r.anomaly_score != threshold:
            out.append(ThresholdScore(threshold, sum(parts.values()), tp, tn, fp, fn, tp + tn + fp + fn))
            threshold = r.anomaly_score
        if r.window is not None:
            tp, fn = tp + 1, fn - 1
            parts[r.window] = max(parts[r.window], r.sweep_score)
        else:
            fp, tn = fp + 1, tn - 1
            parts["fp"] += r.sweep_score
    out.append(ThresholdScore(threshold, sum(parts.values()), tp, tn, fp, fn, tp + tn + fp + fn))
    return out


def score_at(table: list[ThresholdScore], threshold: float) -> ThresholdScore:
    """NAB `Sweeper.scoreDataSet`'s row lookup (see the module note for the no-row case)."""
    prev = None
    for row in table:
        if row.threshold == threshold:
            return row
        if row.threshold < threshold:
            return prev
        prev = row
    return table[-1]


def optimize_threshold(files: list[tuple[list[Row]]], cost: dict) -> ThresholdScore:
    """NAB `optimizeThreshold`: the best threshold over the whole corpus (ties -> highest)."""
    all_rows = [r for rows in files for r in rows]
    table = scores_by_threshold(all_rows, cost)
    return sorted(table, key=lambda x: x.score, reverse=True)[0]


def corpus_score(files: dict[str, tuple], cost: dict, probation: float = PROBATION_PERCENT) -> dict:
    """files: name -> (timestamps, scores, windows). Returns threshold, raw score and counts."""
    swept = {n: sweep_rows(t, s, w, n, cost, probation) for n, (t, s, w) in files.items()}
    best = optimize_threshold(list(swept.values()), cost)
    total, per_file = 0.0, {}
    counts = dict(tp=0, tn=0, fp=0, fn=0)
    for n, rows in swept.items():
        row = score_at(scores_by_threshold(rows, cost), best.threshold)
        per_file[n] = row.score
        total += row.score
        for k in counts:
            counts[k] += getattr(row, k)
    return {"threshold": best.threshold, "raw": total, "per_file": per_file, **counts}


def normalized(raw: float, null: float, n_labels: int, cost: dict) -> float:
    perfect = n_labels * cost["tpWeight"]
    return 100.0 * (raw - null) / (perfect - null)


def score_profiles(files: dict[str, tuple], n_labels: int, profiles: dict, only: tuple[str, ...] | None = None) -> dict:
    """Normalised score per profile for one detector's scores."""
    out = {}
    for name, profile in profiles.items():
        if only is not None and name not in only:
            continue
        cost = profile["CostMatrix"]
        det = corpus_score(files, cost)
        null_files = {n: (t, np.zeros(len(s)), w) for n, (t, s, w) in files.items()}
        null = corpus_score(null_files, cost)
        out[name] = {
            "score": normalized(det["raw"], null["raw"], n_labels, cost),
            "threshold": det["threshold"],
            "raw": det["raw"],
            "null_raw": null["raw"],
            "tp": det["tp"],
            "fp": det["fp"],
            "fn": det["fn"],
        }
    return out


def load_profiles(path: Path) -> dict:
    return json.loads(Path(path).read_text())
