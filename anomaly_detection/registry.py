"""Versioned models on disk (`$DATA_DIR/models/<kind>/<version>/`) and the `model_registry` table.

A version directory holds the model file, its hyperparameters, its training
metrics and a manifest (kind, trained_at, training span). The registry table
records every training run and whether it was promoted; the detector loads the
most recently promoted version of each kind.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

from anomaly_detection.detectors import MODEL_KINDS
from observability import tables
from observability.logs import get_logger
from observability.store import Store

log = get_logger(__name__)
KINDS = MODEL_KINDS


def detector_class(kind: str):
    """The detector class of a model kind (imports PyTorch only for the transformer)."""
    if kind == "isolation_forest":
        from anomaly_detection.detectors.isolation_forest import IsolationForestDetector

        return IsolationForestDetector
    if kind == "transformer":
        from anomaly_detection.detectors.transformer import TransformerDetector

        return TransformerDetector
    raise ValueError(f"model must be one of {list(MODEL_KINDS)}, got {kind!r}")


def version_dir(settings, kind: str, version: str) -> Path:
    return Path(settings.models_dir) / kind / version


def new_version(kind: str, now: datetime) -> str:
    return f"{kind}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def kind_of(version: str) -> str:
    for kind in KINDS:
        if version.startswith(kind + "-"):
            return kind
    raise ValueError(f"unknown model version {version!r}: expected <kind>-<timestamp>-<id>")


def save(settings, detector, version: str, manifest: dict) -> Path:
    path = version_dir(settings, detector.name, version)
    detector.save(path)
    (path / "manifest.json").write_text(
        json.dumps({"version": version, "model": detector.name, **manifest}, indent=2, default=str)
    )
    if not (path / "training_metrics.json").exists():
        (path / "training_metrics.json").write_text(json.dumps({"n_train": getattr(detector, "n_train_", 0)}, indent=2))
    return path


def manifest(settings, version: str) -> dict:
    return json.loads((version_dir(settings, kind_of(version), version) / "manifest.json").read_text())


def load(settings, version: str):
    kind = kind_of(version)
    path = version_dir(settings, kind, version)
    if kind == "transformer":
        return detector_class(kind).load(path, device=settings.torch_device)
    return detector_class(kind).load(path)


def promoted_version(store: Store, kind: str) -> str | None:
    row = store.fetch_one(
        f"SELECT version FROM {tables.MODEL_REGISTRY} WHERE model = ? AND promoted ORDER BY trained_at DESC, version DESC LIMIT 1",
        [kind],
    )
    return row[0] if row else None


def record(store: Store, version: str, trained_at: datetime, kind: str, metrics: dict, promoted: bool) -> None:
    store.execute(
        f"INSERT OR REPLACE INTO {tables.MODEL_REGISTRY} (version, trained_at, model, metrics, promoted) VALUES (?, ?, ?, ?, ?)",
        [version, trained_at, kind, json.dumps(metrics, default=str), promoted],
    )
