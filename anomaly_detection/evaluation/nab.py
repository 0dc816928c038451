"""`evaluate nab`: run the univariate streaming detector over NAB, write NAB-layout results, score them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_detection.evaluation import nab_scoring
from anomaly_detection.univariate import UnivariateStreamingDetector
from observability.logs import get_logger

log = get_logger(__name__)
DETECTOR_NAME = "obsplatform"
LEADERBOARD = (
    ("ARTime", 74.9),
    ("Numenta HTM", 70.5),
    ("CAD-OSE", 69.9),
    ("earthgecko Skyline", 58.2),
    ("KNN-CAD", 58.0),
    ("Random Cut Forest", 51.7),
    ("Twitter ADVec", 47.1),
    ("Windowed Gaussian", 39.6),
    ("random", 11.0),
)


def load_corpus(data_root: Path) -> tuple[dict[str, pd.DataFrame], dict[str, list], int]:
    """(file -> frame, file -> labelled windows, number of labelled windows: NAB's normaliser)."""
    data_root = Path(data_root)
    windows = json.loads((data_root / "labels" / "combined_windows.json").read_text())
    frames = {}
    for rel in sorted(windows):
        df = pd.read_csv(data_root / "data" / rel)
        df["timestamp"] = pd.to_datetime(df["timestamp"])
        frames[rel] = df
    n_windows = sum(len(v) for v in windows.values())
    return frames, {k: [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in v] for k, v in windows.items()}, n_windows


def load_result_files(results_dir: Path, detector: str, windows: dict[str, list]) -> dict[str, tuple]:
    """NAB-layout result files of one detector -> file -> (timestamps, anomaly scores, windows)."""
    files = {}
    for rel, wins in windows.items():
        category, name = rel.split("/", 1)
        df = pd.read_csv(Path(results_dir) / detector / category / f"{detector}_{name}")
        files[rel] = (pd.to_datetime(df["timestamp"]), df["anomaly_score"].to_numpy(dtype=float), wins)
    return files


def published_thresholds(data_root: Path, detector: str) -> dict[str, float]:
    """profile -> the threshold NAB's optimiser chose for `detector` (`config/thresholds.json`)."""
    table = json.loads((Path(data_root) / "config" / "thresholds.json").read_text())
    return {profile: v["threshold"] for profile, v in table[detector].items()}


def score_published(data_root: Path, detector: str) -> dict:
    """Score NAB's shipped result files of `detector` at NAB's thresholds (checks the scorer)."""
    data_root = Path(data_root)
    _, windows, n_windows = load_corpus(data_root)
    files = load_result_files(data_root / "results", detector, windows)
    profiles = nab_scoring.load_profiles(data_root / "scoring_profiles.json")
    return nab_scoring.score_profiles(files, n_windows, profiles, thresholds=published_thresholds(data_root, detector))


def label_column(ts: pd.Series, windows: list) -> np.ndarray:
    lab = np.zeros(len(ts), dtype=int)
    for a, b in windows:
        lab[((ts >= a) & (ts <= b)).to_numpy()] = 1
    return lab


def run(
    data_root: Path, out: Path | None, detector: UnivariateStreamingDetector | None = None, progress: bool = False
) -> dict:
    detector = detector or UnivariateStreamingDetector()
    frames, windows, n_windows = load_corpus(data_root)
    files = {}
    items = frames.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(frames), desc="nab", unit="file")
    for rel, df in items:
        scores = detector.score_series(df["value"].to_numpy())
        files[rel] = (df["timestamp"], scores, windows[rel])
        if out is not None:
            write_result(Path(out), rel, df, scores, windows[rel])
    profiles = nab_scoring.load_profiles(Path(data_root) / "scoring_profiles.json")
    results = nab_scoring.score_profiles(files, n_windows, profiles)
    if out is not None:
        (Path(out) / DETECTOR_NAME / "final_results.json").write_text(
            json.dumps({DETECTOR_NAME: results}, indent=2, default=float)
        )
    return results


def write_result(out: Path, rel: str, df: pd.DataFrame, scores: np.ndarray, windows: list) -> Path:
    """`<out>/<detector>/<category>/<detector>_<file>.csv` with timestamp,value,anomaly_score,label."""
    category, name = rel.split("/", 1)
    path = out / DETECTOR_NAME / category / f"{DETECTOR_NAME}_{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "timestamp": df["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "value": df["value"],
            "anomaly_score": np.round(scores, 6),
            "label": label_column(df["timestamp"], windows),
        }
    ).to_csv(path, index=False)
    return path


def report(results: dict) -> str:
    lines = [
        f"nab_standard_score={results['standard']['score']:.1f}",
        f"nab_reward_low_FP_rate_score={results['reward_low_FP_rate']['score']:.1f}",
        f"nab_reward_low_FN_rate_score={results['reward_low_FN_rate']['score']:.1f}",
        "standard-profile leaderboard (published):",
    ]
    board = sorted([*LEADERBOARD, ("this detector", round(results["standard"]["score"], 1))], key=lambda x: -x[1])
    lines += [f"  {name:<20} {score:5.1f}" for name, score in board]
    return "\n".join(lines)
