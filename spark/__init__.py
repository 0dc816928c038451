"""The Spark Structured Streaming job: raw events -> 1-minute windows in DuckDB, exactly once;
OTLP logs and metric points -> the `logs` and `otel_metrics` tables.

`python -m spark.streaming_job [--available-now]` (or `python -m spark`). Modules:
`session` (SparkSession), `source` (Python Data Source over the transport),
`staging` (bronze files and per-range manifests written by the source),
`transforms` (pure DataFrame functions), `otlp_records` (logs and metrics
topics: one parse per range), `sink` (DuckDB upsert sink),
`supervisor` (starts, restarts, stops the queries), `publish` (aggregated-metrics
records via the outbox), `progress` (terminal progress bar), `checkpoint` (reads
Spark's checkpoint), `streaming_job` (wiring, CLI).
"""
