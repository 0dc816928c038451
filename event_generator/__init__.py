"""Synthetic telemetry generator with anomaly scenarios and ground-truth labels, and replay."""
