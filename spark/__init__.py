"""The Spark Structured Streaming job: raw events -> 1-minute windows in DuckDB, exactly once.

`python -m spark.streaming_job [--available-now]` (or `python -m spark`). Modules:
`session` (SparkSession), `source` (Python Data Source over the transport),
`staging` (bronze files and per-range manifests written by the source),
`transforms` (pure DataFrame functions), `sink` (DuckDB upsert sink),
`streaming_job` (wiring, CLI).
"""
