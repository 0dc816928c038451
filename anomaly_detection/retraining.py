"""Model registry API called by the retraining DAG: train, evaluate, promote.

    version = train_candidate("isolation_forest")      # or "transformer"
    metrics = evaluate_candidate(version)
    promoted = promote_if_not_worse(version, metrics)

`evaluate_candidate` returns (key names are an interface)::

    {
      "model": kind, "candidate_version": v, "current_version": v | None,
      "holdout_start": iso, "holdout_end": iso, "holdout_windows": n,
      "candidate": {"holdout": M, "scenarios": M | None},
      "current":   {"holdout": M, "scenarios": M | None} | None,
    }

where M = {"precision", "recall", "f1", "tp", "fp", "fn", "false_alerts",
"false_alerts_per_service_day", "windows"}. "holdout" scores the model on the
most recent `holdout_hours` of service_metrics (never used for training) with
anomalies injected into a seeded sample of its normal windows (error surge,
latency spike, traffic drop and surge); "scenarios" scores the windows of the
generator's labelled scenarios (`scenario_labels`) when any overlap the data.
A window is a detection when the model's own calibrated score >= 0.5.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from anomaly_detection import data, registry
from observability.logs import get_logger
from observability.settings import get_settings
from observability.store import Store, utcnow

log = get_logger(__name__)

TRAIN_HOURS = 72
HOLDOUT_HOURS = 6
INJECT_SHARE = 0.05
F1_TOLERANCE = 0.01
FALSE_ALERT_TOLERANCE = 0.5  # per service-day
FALSE_ALERT_BUDGET = 1.0  # per service-day: the detection target


def _ctx(settings, store):
    settings = settings or get_settings()
    if store is None:
        store = Store.from_settings(settings)
        store.migrate()
    return settings, store


def _latest_window(store: Store) -> datetime | None:
    row = store.fetch_one("SELECT max(window_start) FROM service_metrics")
    return row[0] if row and row[0] is not None else None


def train_candidate(model: str, settings=None, store=None, now=None, **params) -> str:
    """Train a new version of `model` on recent service_metrics minus incident windows.

    The newest `HOLDOUT_HOURS` are left out for `evaluate_candidate`. `params`
    override the detector's hyperparameters (e.g. a tiny transformer in tests).
    Returns the version id; files land under `models_dir/<model>/<version>/`.
    """
    settings, store = _ctx(settings, store)
    if model not in registry.KINDS:
        raise ValueError(f"model must be one of {sorted(registry.KINDS)}, got {model!r}")
    latest = _latest_window(store)
    now = now or utcnow()
    end = min(now, latest + timedelta(minutes=1)) if latest else now
    train_end = end - timedelta(hours=HOLDOUT_HOURS)
    history = data.metrics(store, train_end - timedelta(hours=TRAIN_HOURS), train_end)
    if len(history) and history["window_start"].nunique() < 4 * 60:  # little data: no separate holdout
        train_end = end
        history = data.metrics(store, end - timedelta(hours=TRAIN_HOURS), end)
    excluded = data.mask_spans(history, data.incident_spans(store), pad_minutes=5)
    labels = data.scenario_labels(store)
    if not labels.empty:
        excluded |= data.mask_spans(
            history, labels.rename(columns={"start_time": "started_at", "end_time": "ended_at"}), 5
        )
    history = history[~excluded].reset_index(drop=True)
    cls = registry.detector_class(model)
    if model == "transformer":
        params.setdefault("device", settings.torch_device)
    detector = cls(**params).fit(history)
    version = registry.new_version(model, now)
    registry.save(
        settings,
        detector,
        version,
        {
            "trained_at": now,
            "train_start": (train_end - timedelta(hours=TRAIN_HOURS)).isoformat(),
            "train_end": train_end.isoformat(),
            "train_windows": int(len(history)),
            "excluded_windows": int(excluded.sum()),
            "ready": bool(getattr(detector, "ready_", False)),
        },
    )
    log.info(
        "candidate trained",
        model=model,
        version=version,
        windows=len(history),
        ready=getattr(detector, "ready_", False),
    )
    return version


def evaluate_candidate(version: str, settings=None, store=None) -> dict:
    """Score the candidate and the promoted model of its kind on the same held-out data."""
    settings, store = _ctx(settings, store)
    kind = registry.kind_of(version)
    current = registry.promoted_version(store, kind)
    latest = _latest_window(store)
    out = {"model": kind, "candidate_version": version, "current_version": current, "candidate": None, "current": None}
    if latest is None:
        return out | {"holdout_windows": 0}
    end = latest + timedelta(minutes=1)
    start = end - timedelta(hours=HOLDOUT_HOURS)
    context = data.metrics(store, start - timedelta(hours=4), start)
    holdout = data.metrics(store, start, end)
    spans = data.incident_spans(store)
    labels = data.scenario_labels(store)
    label_spans = (
        labels.rename(columns={"start_time": "started_at", "end_time": "ended_at"}) if not labels.empty else labels
    )
    normal = holdout[~(data.mask_spans(holdout, spans, 5) | data.mask_spans(holdout, label_spans, 5))].reset_index(
        drop=True
    )
    injected, truth = inject(normal, seed=0)
    out |= {"holdout_start": start.isoformat(), "holdout_end": end.isoformat(), "holdout_windows": int(len(holdout))}

    scen = None
    if not labels.empty:
        all_rows = data.metrics(store, None, None)
        in_label = data.mask_spans(all_rows, label_spans, 0)
        if in_label.any():
            scen = (all_rows, in_label.to_numpy())

    for role, v in (("candidate", version), ("current", current)):
        if v is None:
            continue
        det = registry.load(settings, v)
        m = {"holdout": _metrics(det.set_context(context).score(injected), truth, injected)}
        if scen is not None:
            rows, truth_s = scen
            m["scenarios"] = _metrics(det.set_context(pd.DataFrame()).score(rows), truth_s, rows)
        else:
            m["scenarios"] = None
        out[role] = m
    return out


def promote_if_not_worse(version: str, metrics: dict, settings=None, store=None) -> bool:
    """Promote when the candidate's F1 and false-alert rate are no worse than the current model's.

    "No worse" = F1 at least current - 0.01 on every evaluated set and false
    alerts per service-day on the holdout within the budget (1, the platform's
    target) or at most current + 0.5. Without a
    promoted model any candidate that trained on enough data is promoted.
    Every call is recorded in model_registry.
    """
    settings, store = _ctx(settings, store)
    kind = registry.kind_of(version)
    cand, cur = metrics.get("candidate"), metrics.get("current")
    info = registry.manifest(settings, version)
    promote = bool(info.get("ready", True)) and cand is not None
    reason = "no current model"
    if promote and cur is not None:
        for part in ("holdout", "scenarios"):
            if cand.get(part) and cur.get(part) and cand[part]["f1"] < cur[part]["f1"] - F1_TOLERANCE:
                promote, reason = False, f"{part} f1 {cand[part]['f1']:.3f} < current {cur[part]['f1']:.3f}"
        cand_fa = cand["holdout"]["false_alerts_per_service_day"]
        # Within the false-alert budget a candidate is never "worse" on alerts: a current
        # model that never alerts (and never detects) must not block better ones forever.
        if (
            promote
            and cand_fa > FALSE_ALERT_BUDGET
            and cand_fa > cur["holdout"]["false_alerts_per_service_day"] + FALSE_ALERT_TOLERANCE
        ):
            promote, reason = False, "more false alerts than the current model"
        if promote:
            reason = "not worse than current"
    elif not promote:
        reason = "candidate not ready (too little training data)"
    trained_at = pd.Timestamp(info.get("trained_at") or utcnow()).to_pydatetime()
    registry.record(store, version, trained_at, kind, metrics | {"decision": reason}, promote)
    log.info("promotion decision", version=version, promoted=promote, reason=reason)
    return promote


# -- evaluation helpers -------------------------------------------------------------
def inject(normal: pd.DataFrame, seed: int = 0, share: float = INJECT_SHARE) -> tuple[pd.DataFrame, np.ndarray]:
    """Copy of `normal` with single-window faults injected into a seeded sample of rows."""
    df = normal.copy().reset_index(drop=True)
    truth = np.zeros(len(df), dtype=bool)
    if df.empty:
        return df, truth
    rng = np.random.default_rng(seed)
    n = max(1, int(len(df) * share))
    # Not the first hour of a service (it is context) and never two adjacent picks.
    order = df.groupby("service").cumcount().to_numpy()
    candidates = np.flatnonzero(order >= 60)
    picks = rng.choice(candidates, size=min(n, len(candidates)), replace=False) if len(candidates) else []
    kinds = ("error_surge", "latency_spike", "traffic_drop", "traffic_surge")
    for k, i in enumerate(sorted(picks)):
        if i > 0 and truth[i - 1]:
            continue
        kind = kinds[k % len(kinds)]
        req = float(df.at[i, "request_count"])
        if kind == "error_surge":
            rate = min(1.0, max(0.2, 8 * float(df.at[i, "error_rate"] or 0)))
            df.at[i, "error_count"], df.at[i, "error_rate"] = int(round(req * rate)), rate
        elif kind == "latency_spike":
            for c in ("avg_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "max_latency_ms"):
                df.at[i, c] = float(df.at[i, c]) * 5
        else:
            factor = 0.15 if kind == "traffic_drop" else 4.0
            df.at[i, "request_count"] = max(1, int(req * factor))
            df.at[i, "error_count"] = int(round(df.at[i, "request_count"] * float(df.at[i, "error_rate"] or 0)))
        truth[i] = True
    return df, truth


def _metrics(scores: np.ndarray, truth: np.ndarray, rows: pd.DataFrame) -> dict:
    pred = np.asarray(scores) >= 0.5
    truth = np.asarray(truth, dtype=bool)
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    service_days = max(len(rows) / 1440.0, 1e-9)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "false_alerts": fp,
        "false_alerts_per_service_day": round(fp / service_days, 3),
        "windows": int(len(rows)),
    }
