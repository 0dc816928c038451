"""Every detector, one class per file, behind `BaseDetector`."""

from anomaly_detection.detectors.base import BaseDetector
from anomaly_detection.detectors.isolation_forest import IsolationForestDetector
from anomaly_detection.detectors.robust_stats import RobustStatsDetector
from anomaly_detection.detectors.rules import RulesDetector
from anomaly_detection.detectors.transformer import TransformerDetector, resolve_device

#: name -> class; the model kinds are the ones the registry versions.
DETECTORS = {
    cls.name: cls for cls in (RulesDetector, RobustStatsDetector, IsolationForestDetector, TransformerDetector)
}
MODEL_KINDS = (IsolationForestDetector.name, TransformerDetector.name)

__all__ = [
    "BaseDetector",
    "RulesDetector",
    "RobustStatsDetector",
    "IsolationForestDetector",
    "TransformerDetector",
    "DETECTORS",
    "MODEL_KINDS",
    "resolve_device",
]
