"""DuckDB table names and DDL: the data contract between stages.

Each table has exactly one owning writer (named in the comment); every other
stage only reads it. Column names are an interface: operators and other tools
query them. Timestamps are UTC (`TIMESTAMP` holding UTC wall time).

Migrations are append-only: add a new entry to `MIGRATIONS`, never edit an
applied one. `observability.store.Store.migrate()` applies them in order and
records each in `schema_version`.
"""

from __future__ import annotations

import hashlib

SERVICE_METRICS = "service_metrics"  # writer: spark
ENDPOINT_METRICS = "endpoint_metrics"  # writer: spark
TRACE_SAMPLES = "trace_samples"  # writer: spark
SERVICE_DEPENDENCIES = "service_dependencies"  # writer: spark (call graph seen in parent/child spans)
DEAD_LETTER = "dead_letter"  # writer: spark (also ingests the dead-letter topic)
STREAM_PROGRESS = "stream_progress"  # writer: spark
SINK_COMMITS = "sink_commits"  # writer: spark
SCENARIO_LABELS = "scenario_labels"  # writer: event_generator
ANOMALIES = "anomalies"  # writer: anomaly_detection
INCIDENTS = "incidents"  # writer: anomaly_detection
DETECTOR_PROGRESS = "detector_progress"  # writer: anomaly_detection
INCIDENT_SUMMARIES = "incident_summaries"  # writer: llm
HEARTBEATS = "heartbeats"  # writer: each long-running service, its own row
HEALTH_CHECKS = "health_checks"  # writer: dags (monitoring_dag)
DATA_QUALITY_RESULTS = "data_quality_results"  # writer: dags (data_quality_dag)
MODEL_REGISTRY = "model_registry"  # writer: anomaly_detection training (retraining_dag)
LOGS = "logs"  # writer: spark (the logs topic; OTLP log records, observability.records)
OTEL_METRICS = "otel_metrics"  # writer: spark (the metrics topic; one row per OTLP data point)
SCHEMA_VERSION = "schema_version"  # writer: store.migrate
TRACE_INDEX = "trace_index"  # writer: spark (one row per trace, merged across micro-batches; spark.trace_index)
ERROR_MESSAGES = "error_messages"  # writer: spark (gold: error text per window, never aggregated away)
LAYER_QUEUE = "layer_queue"  # writer: spark (committed batches whose silver, gold, error_messages are to write)
OUTBOX = "outbox"  # writer: each stage that publishes after a commit, its own topics' rows (observability.outbox)
ALERT_EVENTS = "alert_events"  # writer: anomaly_detection.notifier (one row per (incident, event) to notify)
ALERT_DELIVERIES = "alert_deliveries"  # writer: anomaly_detection.notifier (every delivery attempt, per channel)


def trace_key_sql(trace_id: str = "trace_id") -> str:
    """SQL for `trace_index.trace_key` of a trace-id expression: the upper 64 bits of its MD5.

    Why (issue 17): `trace_index` had a primary-key index on trace_id, and DuckDB loads a
    table's whole ART index into memory when a connection first uses it and writes it back at
    checkpoint. The sink opens a connection per micro-batch, so its merge grew with the table:
    ~0.2 CPU-s per 500,000-span batch on an empty index, ~1.5 on 6M traces (~2 s with the
    checkpoint). A lookup scans this 8-byte column instead (~0.04 CPU-s on 6M rows) and then
    compares trace_id on the few rows it matched. MD5, not DuckDB's `hash()`, so that keys
    written by one DuckDB version are found by the next."""
    return f"(md5_number({trace_id}) >> 64)::UBIGINT"


def trace_key(trace_id: str) -> int:
    """`trace_key_sql` in Python, for rows built outside DuckDB (md5_number reads the digest as a
    little-endian 128-bit number, so its upper half is the digest's last 8 bytes)."""
    return int.from_bytes(hashlib.md5(trace_id.encode()).digest()[8:], "little")


# alert_events.incident_id of an SLA-risk `forecast` event (no incident): forecast:<service>:<metric>
ALERT_FORECAST_KEY_PREFIX = "forecast:"
FORECASTS = "forecasts"  # writer: anomaly_detection.forecaster (next hour per service and metric, with intervals)
SLA_RISK = "sla_risk"  # writer: anomaly_detection.forecaster (per service and SLA: chance of crossing it in the hour)
EMBEDDINGS = "embeddings"  # writer: llm.indexer (one row per searchable item: trace, log template, incident)
EMBEDDING_VECTORS = "embedding_vectors"  # writer: llm.indexer (the content cache: one vector per distinct text)
EMBEDDING_PROGRESS = "embedding_progress"  # writer: llm.indexer (what each source has been indexed up to)
EMBEDDING_CENTROIDS = "embedding_centroids"  # writer: llm.indexer (the search IVF index: k-means centroids per model)

# `heartbeats.component` of each long-running service: written by that service
# (`Store.heartbeat`), read by `observability.health` and the dashboard.
SPARK_HEARTBEAT = "spark"
DETECTOR_HEARTBEAT = "detector"
NARRATOR_HEARTBEAT = "narrator"
INGEST_HEARTBEAT = "ingest"  # the OTLP receiver (ingest/)
NOTIFIER_HEARTBEAT = "notifier"
FORECASTER_HEARTBEAT = "forecaster"

# `forecasts.metric` / `sla_risk.metric`: what the forecaster predicts, per 5-minute bucket of a service.
FORECAST_METRICS = ("request_rate", "error_rate", "p95_latency_ms", "p99_latency_ms")
INDEXER_HEARTBEAT = "indexer"  # llm.indexer (search embeddings)

EMBEDDING_DIM = 384  # the search model's vector size (observability.embedding_model)

_METRIC_COLUMNS = """
    request_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,
    client_error_count BIGINT NOT NULL,
    error_rate DOUBLE NOT NULL,
    avg_latency_ms DOUBLE,
    p50_latency_ms DOUBLE,
    p95_latency_ms DOUBLE,
    p99_latency_ms DOUBLE,
    max_latency_ms DOUBLE,
    updated_at TIMESTAMP NOT NULL
"""

METRIC_VALUE_COLUMNS = (
    "request_count",
    "error_count",
    "client_error_count",
    "error_rate",
    "avg_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
)

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        f"""
CREATE TABLE IF NOT EXISTS {SERVICE_METRICS} (
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    service VARCHAR NOT NULL,
    {_METRIC_COLUMNS},
    PRIMARY KEY (window_start, service)
);
CREATE TABLE IF NOT EXISTS {ENDPOINT_METRICS} (
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    service VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL,
    {_METRIC_COLUMNS},
    PRIMARY KEY (window_start, service, endpoint)
);
CREATE TABLE IF NOT EXISTS {TRACE_SAMPLES} (
    window_start TIMESTAMP NOT NULL,
    service VARCHAR NOT NULL,
    trace_id VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,          -- error | slow | normal
    PRIMARY KEY (window_start, service, trace_id)
);
CREATE TABLE IF NOT EXISTS {SERVICE_DEPENDENCIES} (
    window_start TIMESTAMP NOT NULL,
    parent_service VARCHAR NOT NULL,  -- the caller (span's parent)
    child_service VARCHAR NOT NULL,   -- the callee
    call_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,      -- child spans with status >= 500
    PRIMARY KEY (window_start, parent_service, child_service)
);
CREATE TABLE IF NOT EXISTS {DEAD_LETTER} (
    received_at TIMESTAMP NOT NULL,
    source VARCHAR NOT NULL,          -- e.g. spark:raw_events, replay:file.jsonl:12
    reason VARCHAR NOT NULL,
    payload VARCHAR
);
CREATE TABLE IF NOT EXISTS {STREAM_PROGRESS} (
    batch_id BIGINT PRIMARY KEY,
    processed_at TIMESTAMP NOT NULL,
    rows_in BIGINT NOT NULL,
    rows_rejected BIGINT NOT NULL,
    rows_late BIGINT NOT NULL,
    max_event_time TIMESTAMP,
    watermark TIMESTAMP
);
CREATE TABLE IF NOT EXISTS {SINK_COMMITS} (
    sink VARCHAR NOT NULL,
    batch_id BIGINT NOT NULL,
    committed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (sink, batch_id)
);
CREATE TABLE IF NOT EXISTS {SCENARIO_LABELS} (
    id VARCHAR PRIMARY KEY,
    scenario_type VARCHAR NOT NULL,   -- error_surge | latency_spike | traffic_drop | latency_drift | cascade
    service VARCHAR NOT NULL,         -- a service whose metrics show the scenario
    root_service VARCHAR NOT NULL,    -- where the fault was injected
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS {ANOMALIES} (
    id VARCHAR PRIMARY KEY,
    service VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    detected_at TIMESTAMP NOT NULL,
    anomaly_type VARCHAR NOT NULL,    -- error_surge | latency_spike | latency_drift | traffic_drop | traffic_surge | multivariate
    severity VARCHAR NOT NULL,        -- low | medium | high | critical
    score DOUBLE NOT NULL,            -- ensemble score in [0, 1]
    detectors JSON,                   -- {{detector: score}}
    baseline JSON,
    observed JSON,
    sample_trace_ids VARCHAR[]
);
CREATE TABLE IF NOT EXISTS {INCIDENTS} (
    id VARCHAR PRIMARY KEY,
    service VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    status VARCHAR NOT NULL,          -- open | resolved
    peak_severity VARCHAR NOT NULL,
    root_cause_service VARCHAR,
    related_services VARCHAR[],
    updated_at TIMESTAMP NOT NULL     -- changes whenever the incident does (the narrator re-summarises)
);
CREATE TABLE IF NOT EXISTS {DETECTOR_PROGRESS} (
    service VARCHAR PRIMARY KEY,
    last_window_start TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS {INCIDENT_SUMMARIES} (
    id VARCHAR PRIMARY KEY,
    incident_id VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    summary VARCHAR NOT NULL,
    generated_by VARCHAR NOT NULL,    -- llm | template
    model VARCHAR,
    latency_ms DOUBLE,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    facts JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS {HEARTBEATS} (
    component VARCHAR PRIMARY KEY,
    last_seen TIMESTAMP NOT NULL,
    detail VARCHAR
);
CREATE TABLE IF NOT EXISTS {HEALTH_CHECKS} (
    checked_at TIMESTAMP NOT NULL,
    component VARCHAR NOT NULL,
    status VARCHAR NOT NULL,          -- healthy | degraded | unhealthy
    detail VARCHAR,
    latency_ms DOUBLE
);
CREATE TABLE IF NOT EXISTS {DATA_QUALITY_RESULTS} (
    checked_at TIMESTAMP NOT NULL,
    check_name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,          -- pass | warn | fail
    observed DOUBLE,
    detail VARCHAR
);
CREATE TABLE IF NOT EXISTS {MODEL_REGISTRY} (
    version VARCHAR PRIMARY KEY,
    trained_at TIMESTAMP NOT NULL,
    model VARCHAR NOT NULL,           -- isolation_forest | transformer
    metrics JSON,
    promoted BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_anomalies_service_window ON {ANOMALIES} (service, window_start);
CREATE INDEX IF NOT EXISTS idx_dead_letter_received ON {DEAD_LETTER} (received_at);
""",
    ),
    (
        2,
        "transactional outbox",
        f"""
CREATE TABLE IF NOT EXISTS {OUTBOX} (
    id VARCHAR PRIMARY KEY,           -- the record's stable id, also its value's "id": consumers de-duplicate on it
    seq BIGINT NOT NULL,              -- send order, ascending (assigned when staged)
    topic VARCHAR NOT NULL,
    key VARCHAR,                      -- the message key (UTF-8)
    value VARCHAR NOT NULL,           -- the message value (JSON)
    created_at TIMESTAMP NOT NULL,    -- when it was staged, in the data's own transaction
    sent_at TIMESTAMP                 -- NULL until the transport's flush() confirmed it
);
""",
    ),
    (
        4,
        "OTLP logs and metric points (columns: observability.records LOG_COLUMNS, METRIC_COLUMNS)",
        f"""
CREATE TABLE IF NOT EXISTS {LOGS} (
    timestamp TIMESTAMP NOT NULL,
    service VARCHAR NOT NULL,
    severity_text VARCHAR,
    severity_number INTEGER,          -- OTLP SeverityNumber 0-24 (17-24 = ERROR and FATAL)
    body VARCHAR,
    trace_id VARCHAR,
    span_id VARCHAR,
    attributes JSON
);
CREATE TABLE IF NOT EXISTS {OTEL_METRICS} (
    timestamp TIMESTAMP NOT NULL,
    service VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- gauge | sum | histogram
    unit VARCHAR,
    value DOUBLE,                     -- gauge and sum points
    count BIGINT,                     -- histogram points
    sum DOUBLE,
    bucket_bounds DOUBLE[],
    bucket_counts BIGINT[],
    attributes JSON
);
""",
    ),
    (
        6,
        "incidents.root_cause_candidates (ranked root-cause services with their evidence); anomalies.incident_id",
        f"""
ALTER TABLE {INCIDENTS} ADD COLUMN IF NOT EXISTS root_cause_candidates JSON;  -- [{{service, score 0-1, evidence}}], best first
ALTER TABLE {ANOMALIES} ADD COLUMN IF NOT EXISTS incident_id VARCHAR;  -- the (correlated) incident that took this window; NULL: none (a lone low window)
CREATE INDEX IF NOT EXISTS idx_anomalies_incident ON {ANOMALIES} (incident_id);
""",
    ),
    (
        7,
        "trace_index: one row per trace for trace search (spark.trace_index merges it across batches)",
        f"""
CREATE TABLE IF NOT EXISTS {TRACE_INDEX} (
    trace_id VARCHAR PRIMARY KEY,
    start_time TIMESTAMP NOT NULL,    -- the earliest span's start
    end_time TIMESTAMP NOT NULL,      -- the latest span end (start + latency)
    root_service VARCHAR NOT NULL,    -- of the span without a parent; until it arrived, of the earliest span
    root_endpoint VARCHAR,
    root_span_id VARCHAR,             -- NULL: no parentless span seen (yet)
    duration_ms DOUBLE NOT NULL,      -- end_time - start_time
    span_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,      -- spans with status >= 500
    services VARCHAR[] NOT NULL,      -- every service with a span in the trace, sorted
    updated_at TIMESTAMP NOT NULL
);
""",
    ),
    (
        8,
        "gold layer: error_messages (error text per window, with a sample trace kept in gold)",
        f"""
CREATE TABLE IF NOT EXISTS {ERROR_MESSAGES} (
    window_start TIMESTAMP NOT NULL,  -- 1-minute window of the failing spans
    service VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL,
    error_message VARCHAR NOT NULL,
    count BIGINT NOT NULL,            -- spans with this message, added up across micro-batches
    sample_trace_id VARCHAR,          -- one trace with it, a gold-sampled one when there is any
    PRIMARY KEY (window_start, service, endpoint, error_message)
);
""",
    ),
    (
        9,
        "search embeddings: embeddings (items), embedding_vectors (one vector per distinct text), embedding_progress",
        f"""
CREATE TABLE IF NOT EXISTS {EMBEDDING_VECTORS} (
    text_id BIGINT PRIMARY KEY,       -- 64-bit hash of the text (observability.search_text.text_id)
    text VARCHAR NOT NULL,            -- what was embedded
    embedding FLOAT[{EMBEDDING_DIM}] NOT NULL,  -- unit length: cosine similarity = inner product
    model VARCHAR NOT NULL,           -- the model that embedded it (a new model re-embeds)
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS {EMBEDDINGS} (
    kind VARCHAR NOT NULL,            -- trace | log | incident
    item_id VARCHAR NOT NULL,         -- trace id, log template id, incident id
    service VARCHAR,                  -- trace: its entry service; log: its service; incident: its service
    services VARCHAR[],               -- every service the item involves (filters match any)
    time TIMESTAMP NOT NULL,          -- trace start, log template last seen, incident start
    text_id BIGINT NOT NULL,          -- -> {EMBEDDING_VECTORS}.text_id (vector and text)
    trace_id VARCHAR,                 -- a trace to open: the trace itself, a log's latest trace
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (kind, item_id)
);
CREATE TABLE IF NOT EXISTS {EMBEDDING_PROGRESS} (
    source VARCHAR PRIMARY KEY,       -- bronze file path, or logs | incidents
    position TIMESTAMP,               -- logs: newest timestamp indexed
    indexed_at TIMESTAMP NOT NULL
);
""",
    ),
    (
        10,
        "alert notifications: alert_events (what to notify, once per incident and event), alert_deliveries",
        f"""
CREATE TABLE IF NOT EXISTS {ALERT_EVENTS} (
    id VARCHAR PRIMARY KEY,           -- incident_id|event[|n]: the dedupe key, also the payload's "id"
    seq BIGINT NOT NULL,              -- delivery order, ascending
    incident_id VARCHAR NOT NULL,
    event VARCHAR NOT NULL,           -- opened | escalated | summarised | resolved | reminder
    severity VARCHAR NOT NULL,        -- the incident's peak severity when the event was derived
    channels VARCHAR[] NOT NULL,      -- the channels configured then: each gets it once
    payload JSON NOT NULL,            -- the generic webhook body (Slack text and email are made from it)
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS {ALERT_DELIVERIES} (
    event_id VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,         -- webhook:HOST#hash | slack:HOST#hash | email:HOST
    attempt INTEGER NOT NULL,         -- 1, 2, ... per (event_id, channel)
    attempted_at TIMESTAMP NOT NULL,
    outcome VARCHAR NOT NULL,         -- sent | failed | gave_up
    status_code INTEGER,              -- the HTTP status (or SMTP reply code) when there was one
    error VARCHAR,
    duration_ms DOUBLE,
    PRIMARY KEY (event_id, channel, attempt)
);
CREATE INDEX IF NOT EXISTS idx_alert_events_incident ON {ALERT_EVENTS} (incident_id);
""",
    ),
    (
        11,
        "forecasts (next hour per service and metric, 5-minute steps, prediction intervals) and sla_risk",
        f"""
CREATE TABLE IF NOT EXISTS {FORECASTS} (
    service VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,          -- request_rate (requests/s) | error_rate (5xx share) | p95_latency_ms | p99_latency_ms
    target_time TIMESTAMP NOT NULL,   -- start of the predicted 5-minute bucket
    predicted DOUBLE NOT NULL,
    lower DOUBLE NOT NULL,            -- prediction interval at FORECAST_INTERVAL_LEVEL %
    upper DOUBLE NOT NULL,
    made_at TIMESTAMP NOT NULL,       -- one value per forecaster run; the newest run per service is the current forecast
    PRIMARY KEY (service, metric, target_time, made_at)
);
CREATE TABLE IF NOT EXISTS {SLA_RISK} (
    service VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,          -- the forecast metric the SLA bounds: p99_latency_ms | p95_latency_ms | error_rate
    sla DOUBLE NOT NULL,
    sla_source VARCHAR NOT NULL,      -- configured | learned (from the service's own history)
    probability DOUBLE NOT NULL,      -- chance that some bucket of the next hour is over the SLA (the highest step's)
    crossing_time TIMESTAMP,          -- first bucket whose chance reaches FORECAST_RISK_PROBABILITY; NULL: none
    predicted_peak DOUBLE NOT NULL,   -- highest predicted value within the hour
    at_risk BOOLEAN NOT NULL,         -- probability >= FORECAST_RISK_PROBABILITY
    made_at TIMESTAMP NOT NULL,       -- the forecaster run (forecasts.made_at) it was computed from
    PRIMARY KEY (service, metric)
);
""",
    ),
    (
        14,
        "search IVF index: embedding_centroids (k-means lists per model); embedding_vectors.cluster_id",
        f"""
CREATE TABLE IF NOT EXISTS {EMBEDDING_CENTROIDS} (
    model VARCHAR NOT NULL,           -- the model whose vectors were clustered
    cluster_id INTEGER NOT NULL,      -- 0 .. lists-1; {EMBEDDING_VECTORS}.cluster_id points here
    centroid FLOAT[{EMBEDDING_DIM}] NOT NULL,  -- unit length (spherical k-means)
    trained_on BIGINT NOT NULL,       -- vectors of this model when it was trained (retrained when it grows)
    trained_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model, cluster_id)
);
ALTER TABLE {EMBEDDING_VECTORS} ADD COLUMN IF NOT EXISTS cluster_id INTEGER;  -- nearest centroid; NULL: no index yet (always scored)
""",
    ),
    (
        15,
        "layer_queue: a micro-batch's silver, gold and error_messages written after its commit (spark.layer_queue)",
        f"""
CREATE TABLE IF NOT EXISTS {LAYER_QUEUE} (
    batch_key VARCHAR PRIMARY KEY,    -- the sink and batch id (sink_commits) whose layers these are
    bronze_files VARCHAR[] NOT NULL,  -- the bronze files the batch staged: the layers' input
    queued_at TIMESTAMP NOT NULL,     -- in the batch's own commit; layers are written oldest first
    attempts INTEGER NOT NULL,        -- failed tries so far; at LAYER_MAX_ATTEMPTS the row stays for a person to see
    last_error VARCHAR                -- the newest failure, NULL while none
);
""",
    ),
    (
        16,
        "trace_index keyed by trace_key (a 64-bit hash of trace_id) instead of a primary-key index",
        f"""
CREATE TABLE {TRACE_INDEX}_v16 (
    trace_id VARCHAR NOT NULL,        -- one row per trace: spark.trace_index.upsert keeps it so (no index)
    start_time TIMESTAMP NOT NULL,
    end_time TIMESTAMP NOT NULL,
    root_service VARCHAR NOT NULL,
    root_endpoint VARCHAR,
    root_span_id VARCHAR,
    duration_ms DOUBLE NOT NULL,
    span_count BIGINT NOT NULL,
    error_count BIGINT NOT NULL,
    services VARCHAR[] NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    trace_key UBIGINT NOT NULL        -- {trace_key_sql()}: what a lookup by trace id scans
);
INSERT INTO {TRACE_INDEX}_v16 SELECT *, {trace_key_sql()} FROM {TRACE_INDEX};
DROP TABLE {TRACE_INDEX};
ALTER TABLE {TRACE_INDEX}_v16 RENAME TO {TRACE_INDEX};
""",
    ),
]

SCHEMA_VERSION_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION} (
    version INTEGER PRIMARY KEY,
    description VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)
"""

ALL_TABLES = (
    SERVICE_METRICS,
    ENDPOINT_METRICS,
    TRACE_SAMPLES,
    SERVICE_DEPENDENCIES,
    DEAD_LETTER,
    STREAM_PROGRESS,
    SINK_COMMITS,
    SCENARIO_LABELS,
    ANOMALIES,
    INCIDENTS,
    DETECTOR_PROGRESS,
    INCIDENT_SUMMARIES,
    HEARTBEATS,
    HEALTH_CHECKS,
    DATA_QUALITY_RESULTS,
    MODEL_REGISTRY,
    OUTBOX,
    TRACE_INDEX,
    LOGS,
    OTEL_METRICS,
    ALERT_EVENTS,
    ALERT_DELIVERIES,
    FORECASTS,
    SLA_RISK,
    EMBEDDINGS,
    EMBEDDING_VECTORS,
    EMBEDDING_PROGRESS,
    EMBEDDING_CENTROIDS,
    ERROR_MESSAGES,
    LAYER_QUEUE,
)
