"""NAB scoring reproduced: crafted cases, the numpy path equals the literal port, streaming causality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_detection.evaluation import nab as nab_eval
from anomaly_detection.evaluation import nab_scoring as ns
from anomaly_detection.univariate import UnivariateStreamingDetector

STANDARD = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0, "tnWeight": 1.0}
PROFILES = {
    "standard": {"CostMatrix": STANDARD},
    "reward_low_FP_rate": {"CostMatrix": {**STANDARD, "fpWeight": 0.22}},
    "reward_low_FN_rate": {"CostMatrix": {**STANDARD, "fnWeight": 2.0}},
}
# The repository is cloned beside `shared/` (here and in CI): ../shared/datasets/nab from its root.
NAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nab"


@pytest.fixture(scope="module")
def nab_root() -> Path:
    """The NAB corpus with NAB's published result files; missing data fails, never skips."""
    needed = [
        "labels/combined_windows.json",
        "scoring_profiles.json",
        "config/thresholds.json",
        "results/final_results.json",
        "results/numenta",
        "results/knncad",
    ]
    missing = [n for n in needed if not (NAB / n).exists()]
    if missing:
        pytest.fail(
            f"NAB data missing under {NAB} ({', '.join(missing)}): clone the repository beside shared/ (see ../shared/datasets/README.md)"
        )
    return NAB


def corpus(n_files=3, n=1000, width=40):
    files = {}
    for k in range(n_files):
        ts = pd.date_range("2020-01-01", periods=n, freq="5min")
        a = 400 + 100 * k
        files[f"cat/f{k}.csv"] = (ts, np.zeros(n), [(ts[a], ts[a + width - 1])])
    return files


def with_scores(files, fn):
    return {name: (t, fn(len(t), w, t), w) for name, (t, _, w) in files.items()}


def hit(offset):
    """A detector firing once, `offset` rows into each window."""

    def fn(n, w, ts):
        s = np.zeros(n)
        s[list(ts).index(w[0][0]) + offset] = 1.0
        return s

    return fn


def test_perfect_detector_scores_100_and_null_scores_0():
    files = corpus()
    for name in PROFILES:
        perfect = ns.score_profiles(with_scores(files, hit(0)), n_windows=3, profiles={name: PROFILES[name]})[name]
        assert perfect["score"] == pytest.approx(100.0)
        null = ns.score_profiles(files, n_windows=3, profiles={name: PROFILES[name]})[name]
        assert null["score"] == pytest.approx(0.0)


def test_an_early_detection_in_a_window_beats_a_late_one():
    files = corpus()
    early = ns.score_profiles(with_scores(files, hit(2)), 3, {"standard": PROFILES["standard"]})["standard"]["score"]
    late = ns.score_profiles(with_scores(files, hit(35)), 3, {"standard": PROFILES["standard"]})["standard"]["score"]
    assert 0 < late < early < 100


def test_false_positives_cost_and_cost_more_under_the_low_fp_profile():
    files = corpus()

    def with_fp(n, w, ts):
        s = hit(0)(n, w, ts)
        s[200:205] = 1.0  # before the window: full fpWeight each
        return s

    scored = ns.score_profiles(with_scores(files, with_fp), 3, PROFILES)
    assert scored["standard"]["score"] < 100
    assert scored["reward_low_FP_rate"]["score"] < scored["standard"]["score"]
    raw = ns.corpus_score_fast(with_scores(files, with_fp), STANDARD)["raw"]
    assert raw == pytest.approx(3 * 1.0 - 3 * 5 * 0.11)


def test_a_missed_window_costs_fn_weight_and_probation_is_not_scored():
    ts = pd.date_range("2020-01-01", periods=1000, freq="5min")
    scores = np.zeros(1000)
    scores[10] = 1.0  # inside the probationary period: ignored
    files = {"a.csv": (ts, scores, [(ts[500], ts[539])])}
    assert ns.corpus_score_fast(files, STANDARD)["raw"] == pytest.approx(-1.0)
    assert ns.corpus_score(files, STANDARD)["raw"] == pytest.approx(-1.0)


def test_numpy_path_matches_the_literal_port_of_nab():
    rng = np.random.default_rng(3)
    files = {}
    for k in range(5):
        n = 400 + 50 * k
        ts = pd.date_range("2021-01-01", periods=n, freq="1h")
        files[f"f{k}"] = (
            ts,
            np.round(rng.random(n) ** 3, 2),
            [(ts[150], ts[180]), (ts[300], ts[320])] if k % 2 else [],
        )
    for profile in PROFILES.values():
        a, b = ns.corpus_score(files, profile["CostMatrix"]), ns.corpus_score_fast(files, profile["CostMatrix"])
        assert a["threshold"] == b["threshold"]
        assert a["raw"] == pytest.approx(b["raw"])


def test_univariate_mode_is_causal_and_flags_a_new_extreme():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(2000) / 20) + rng.normal(0, 0.05, 2000)
    x[1500] += 5
    det = UnivariateStreamingDetector()
    s = det.score_series(x)
    assert s[1500] == 1.0, "five ranges beyond anything seen"
    assert (s[1200:1500] >= 0.5).mean() < 0.02, "noise makes a new extreme only rarely"
    altered = x.copy()
    altered[1600:] = rng.normal(10, 3, 400)  # the future changes ...
    np.testing.assert_array_equal(det.score_series(altered)[:1600], s[:1600])  # ... the past scores do not
    assert np.isfinite(det.score_series([np.nan, 1.0, np.nan, 2.0])).all()


def test_result_files_follow_nab_layout(tmp_path, nab_root):
    frames, windows, n_windows = nab_eval.load_corpus(nab_root)
    assert n_windows == 116, "NAB normalises by its labelled windows"
    rel = "realKnownCause/machine_temperature_system_failure.csv"
    df = frames[rel]
    path = nab_eval.write_result(tmp_path, rel, df, UnivariateStreamingDetector().score_series(df.value), windows[rel])
    assert (
        path
        == tmp_path
        / nab_eval.DETECTOR_NAME
        / "realKnownCause"
        / f"{nab_eval.DETECTOR_NAME}_machine_temperature_system_failure.csv"
    )
    out = pd.read_csv(path)
    assert list(out.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(out) == len(df) and out.label.sum() > 0 and out.anomaly_score.between(0, 1).all()
    assert len(json.loads((nab_root / "labels" / "combined_windows.json").read_text())) == 58


@pytest.mark.parametrize("detector", ["numenta", "knncad"])
def test_scorer_reproduces_nabs_published_results(nab_root, detector):
    """NAB's own result files, scored at NAB's thresholds, give NAB's leaderboard (all three profiles)."""
    published = json.loads((nab_root / "results" / "final_results.json").read_text())[detector]
    got = nab_eval.score_published(nab_root, detector)
    assert set(got) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    for profile, want in published.items():
        assert got[profile]["score"] == pytest.approx(want, abs=0.01), profile


def test_left_neighbour_distance_matches_brute_force():
    from anomaly_detection.univariate import left_neighbour_distance

    rng = np.random.default_rng(1)
    x = 1e6 + rng.normal(size=1500).cumsum()
    m = 8
    got = left_neighbour_distance(x, m, refresh=200)
    w = np.lib.stride_tricks.sliding_window_view(x, m)
    want = np.full(len(x), np.nan)
    for i in range(m, len(w)):
        want[i + m - 1] = np.sqrt(((w[: i - m + 1] - w[i]) ** 2).sum(1).min())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_univariate_mode_flags_a_broken_pattern_inside_the_usual_range():
    rng = np.random.default_rng(2)
    t = np.arange(3000)
    x = np.sin(2 * np.pi * t / 50) + rng.normal(0, 0.02, len(t))
    x[2500:2550] = 0.0  # one cycle goes flat: no new extreme, but a shape never seen
    s = UnivariateStreamingDetector().score_series(x)
    assert s[2500:2550].max() >= 0.5
    assert (s[1000:2500] >= 0.5).sum() <= 3


def test_dilated_neighbour_distance_matches_brute_force():
    from anomaly_detection.univariate import dilated_neighbour_distance

    rng = np.random.default_rng(4)
    x = rng.normal(size=900).cumsum()
    m, k = 4, 8
    got = dilated_neighbour_distance(x, m, k)
    means = pd.Series(x).rolling(k, min_periods=1).mean().to_numpy()
    want = np.full(len(x), np.nan)
    for t in range(len(x)):
        lags = t - k * np.arange(m)[::-1]
        if lags[0] < 0:
            continue
        here = means[lags]
        earlier = [means[t2 - k * np.arange(m)[::-1]] for t2 in range(t - m * k, -1, -k) if t2 - k * (m - 1) >= 0]
        if earlier:
            want[t] = np.sqrt(((np.array(earlier) - here) ** 2).sum(1).min())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.isnan(got[: (2 * m - 1) * k]).all() and np.isfinite(got[2 * m * k :]).all()


def test_coarse_scale_flags_a_missing_slow_bump():
    t = np.arange(6000)
    x = (np.sin(2 * np.pi * t / 288) > 0).astype(float) + np.random.default_rng(5).normal(0, 0.1, len(t))
    x[4608:4752] = np.random.default_rng(6).normal(0, 0.1, 144)  # one daily bump never comes
    fine = UnivariateStreamingDetector(scales=(1,)).score_series(x)
    multi = UnivariateStreamingDetector().score_series(x)
    assert multi[4608:4752].max() >= 0.5 > fine[4608:4752].max()
    assert (multi[1500:4608] >= 0.5).sum() <= 3
