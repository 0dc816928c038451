"""Every detector, one class per file, behind `BaseDetector`.

The transformer (and so PyTorch) is imported on first use only: a detector
without a promoted transformer starts in a fraction of the time.
"""

from __future__ import annotations

from importlib import import_module

from anomaly_detection.detectors.base import BaseDetector
from anomaly_detection.detectors.isolation_forest import IsolationForestDetector
from anomaly_detection.detectors.robust_stats import RobustStatsDetector
from anomaly_detection.detectors.rules import RulesDetector

#: The learned kinds, versioned by the registry.
MODEL_KINDS = ("isolation_forest", "transformer")
_LAZY = {
    "TransformerDetector": "anomaly_detection.detectors.transformer",
    "resolve_device": "anomaly_detection.detectors.transformer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = [
    "BaseDetector",
    "RulesDetector",
    "RobustStatsDetector",
    "IsolationForestDetector",
    "TransformerDetector",
    "MODEL_KINDS",
    "resolve_device",
]
