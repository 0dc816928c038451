"""Anomaly detection: detectors behind one interface, an ensemble, incidents, evaluation.

Stages meet only at data contracts: this package reads `service_metrics`,
`stream_progress`, `trace_samples` and `service_dependencies`, and is the one
writer of `anomalies`, `incidents`, `detector_progress` and `model_registry`.
"""
