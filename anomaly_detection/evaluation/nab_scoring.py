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
- The threshold is optimised per profile over the whole corpus at once (NAB
  v1.1's optimizer: one sweep over every file's rows), or taken as given (NAB's
  `config/thresholds.json` for its published detectors), then each file is
  scored at that threshold and the scores are summed.
- Normalised score = 100 * (raw - null) / (perfect - null), null = the same
  procedure for a detector that never fires, perfect = number of labelled
  *windows* * tpWeight (NAB's `runner.normalize` counts the entries of
  `combined_windows.json`: 116 in the corpus, not its 120 anomaly labels).
  Scoring NAB's shipped result files for `numenta` and `knncad` at NAB's
  thresholds reproduces `final_results.json` (a test checks it).

`sweep_rows`/`scores_by_threshold`/`corpus_score` are a line-by-line port kept as
the reference; `corpus_score_fast` computes the same numbers with numpy (a test
checks they agree) and is what `score_profiles` uses.

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
    for i, (t, s) in enumerate(zip(ts, scores, strict=False)):
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


def normalized(raw: float, null: float, n_windows: int, cost: dict) -> float:
    """NAB's normalisation: a detection at the start of each of the `n_windows` labelled windows is perfect."""
    perfect = n_windows * cost["tpWeight"]
    return 100.0 * (raw - null) / (perfect - null)


def score_profiles(
    files: dict[str, tuple],
    n_windows: int,
    profiles: dict,
    only: tuple[str, ...] | None = None,
    thresholds: dict[str, float] | None = None,
) -> dict:
    """Normalised score per profile for one detector's scores.

    `n_windows`: the number of labelled windows in the corpus. `thresholds`
    (profile -> threshold) scores at the given threshold instead of optimising one.
    """
    out = {}
    for name, profile in profiles.items():
        if only is not None and name not in only:
            continue
        cost = profile["CostMatrix"]
        fixed = None if thresholds is None else thresholds.get(name)
        det = corpus_score_fast(files, cost, threshold=fixed)
        null_files = {n: (t, np.zeros(len(s)), w) for n, (t, s, w) in files.items()}
        null = corpus_score_fast(null_files, cost)
        out[name] = {
            "score": normalized(det["raw"], null["raw"], n_windows, cost),
            "threshold": det["threshold"],
            "raw": det["raw"],
            "null_raw": null["raw"],
            "tp_rows": det["tp"],
            "fp_rows": det["fp"],
        }
    return out


def load_profiles(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# -- vectorised equivalents (same numbers, fast enough for the whole corpus) -------------
@dataclass
class SweptFile:
    """One file swept: per scorable row its anomaly score, sweep score and window id (-1 outside)."""

    scores: np.ndarray
    sweep: np.ndarray
    window: np.ndarray
    n_windows: int


def sweep_file(timestamps, scores, windows, cost: dict, probation: float = PROBATION_PERCENT) -> SweptFile:
    ts = pd.to_datetime(pd.Series(timestamps)).to_numpy()
    n = len(ts)
    s = np.asarray(scores, dtype=float)
    first_index = {t: i for i, t in reversed(list(enumerate(ts)))}
    sweep = np.empty(n)
    win = np.full(n, -1)
    idx = np.arange(n)
    max_tp = scaled_sigmoid(-1.0)
    sig = np.vectorize(scaled_sigmoid, otypes=[float])
    bounds = [
        (first_index[np.datetime64(pd.Timestamp(a))], first_index[np.datetime64(pd.Timestamp(b))]) for a, b in windows
    ]
    # Outside windows: distance past the preceding window's right edge.
    prev_right = np.full(n, -1)
    prev_width = np.ones(n)
    for left, right in bounds:
        after = idx > right
        prev_right[after] = right
        prev_width[after] = right - left + 1
    past = np.where(prev_right < 0, 3.0, np.abs(prev_right - idx) / np.maximum(prev_width - 1, 1e-12))
    sweep[:] = sig(past) * cost["fpWeight"]
    for k, (left, right) in enumerate(bounds):
        inside = idx[left : right + 1]
        width = float(right - left + 1)
        sweep[inside] = sig(-(right - inside + 1) / width) * cost["tpWeight"] / max_tp
        win[inside] = k
    keep = idx >= probation_length(n, probation)
    present = np.unique(win[keep & (win >= 0)])
    remap = np.full(len(bounds) + 1, -1)
    remap[present] = np.arange(len(present))
    w = np.where(win[keep] >= 0, remap[win[keep]], -1)
    return SweptFile(s[keep], sweep[keep], w, len(present))


def threshold_curve(files: list[SweptFile], cost: dict) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, total score) over the corpus, thresholds from 1.1 down (NAB's table)."""
    offsets = np.cumsum([0] + [f.n_windows for f in files])
    scores = np.concatenate([f.scores for f in files])
    sweep = np.concatenate([f.sweep for f in files])
    win = np.concatenate([np.where(f.window >= 0, f.window + o, -1) for f, o in zip(files, offsets, strict=False)])
    n_win = int(offsets[-1])
    order = np.argsort(-scores, kind="stable")
    s_sorted, sw, wn = scores[order], sweep[order], win[order]
    delta = np.where(wn < 0, sw, 0.0)
    inw = wn >= 0
    if inw.any():
        df = pd.DataFrame({"w": wn[inw], "v": sw[inw]})
        cm = df.groupby("w")["v"].cummax().to_numpy()
        prev = df.assign(cm=cm).groupby("w")["cm"].shift(1).fillna(-cost["fnWeight"]).to_numpy()
        best = np.maximum(cm, -cost["fnWeight"])
        delta[inw] = best - np.maximum(prev, -cost["fnWeight"])
    base = -cost["fnWeight"] * n_win
    total = base + np.cumsum(delta)
    last_of_group = np.r_[s_sorted[1:] != s_sorted[:-1], True] if len(s_sorted) else np.array([], bool)
    thresholds = np.r_[1.1, s_sorted[last_of_group]]
    totals = np.r_[base, total[last_of_group]]
    if len(s_sorted) and s_sorted[0] == 1.1:  # a score of exactly 1.1 merges with the start row
        thresholds, totals = thresholds[1:], totals[1:]
    return thresholds, totals


def file_score_at(f: SweptFile, threshold: float, cost: dict) -> tuple[float, int, int]:
    """Score of one file when rows with score >= threshold are detections; (score, tp rows, fp rows)."""
    det = f.scores >= threshold
    fp_part = f.sweep[det & (f.window < 0)].sum()
    score = fp_part
    for k in range(f.n_windows):
        hit = det & (f.window == k)
        score += f.sweep[hit].max() if hit.any() else -cost["fnWeight"]
    return float(score), int((det & (f.window >= 0)).sum()), int((det & (f.window < 0)).sum())


def corpus_score_fast(
    files: dict[str, tuple], cost: dict, probation: float = PROBATION_PERCENT, threshold: float | None = None
) -> dict:
    """Raw corpus score at `threshold`, or at the optimised threshold when None."""
    swept = {n: sweep_file(t, s, w, cost, probation) for n, (t, s, w) in files.items()}
    if threshold is None:
        th, tot = threshold_curve(list(swept.values()), cost)
        best = int(np.argmax(tot))  # first maximum = highest threshold among ties, as NAB's sort
        threshold = float(th[best])
    total, tp, fp, per_file = 0.0, 0, 0, {}
    for n, f in swept.items():
        sc, a, b = file_score_at(f, threshold, cost)
        per_file[n], total, tp, fp = sc, total + sc, tp + a, fp + b
    return {"threshold": threshold, "raw": total, "per_file": per_file, "tp": tp, "fp": fp, "fn": None}
