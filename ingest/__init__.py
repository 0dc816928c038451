"""The OTLP receiver (`python -m ingest`): OpenTelemetry traces, logs and metrics into the transport."""
