"""One typed settings object, read from the environment and `.env`.

The variable names are an interface (operators set them; compose passes them):
see `.env.example`, which documents every one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- storage -----------------------------------------------------------
    data_dir: Path = Field(Path("./data"), alias="DATA_DIR")
    duckdb_path: Path | None = Field(None, alias="DUCKDB_PATH")

    # --- transport ---------------------------------------------------------
    # Topic names serve both transports (the local log too); the variables keep their KAFKA_ names.
    transport: Literal["local", "kafka"] = Field("local", alias="TRANSPORT")
    kafka_broker: str = Field("localhost:9092", alias="KAFKA_BROKER")
    raw_events_topic: str = Field("raw_events", alias="KAFKA_RAW_EVENTS_TOPIC")
    aggregated_topic: str = Field("aggregated_metrics", alias="KAFKA_AGGREGATED_TOPIC")
    anomalies_topic: str = Field("anomalies", alias="KAFKA_ANOMALIES_TOPIC")
    dead_letter_topic: str = Field("dead_letter", alias="KAFKA_DEAD_LETTER_TOPIC")
    # OTLP logs and metrics (observability.records); spans go to the raw-events topic
    logs_topic: str = Field("raw_logs", alias="KAFKA_LOGS_TOPIC")
    metrics_topic: str = Field("raw_metrics", alias="KAFKA_METRICS_TOPIC")
    topic_partitions: int = Field(4, ge=1, alias="TOPIC_PARTITIONS")
    kafka_replication_factor: int = Field(1, ge=1, alias="KAFKA_REPLICATION_FACTOR")
    log_fsync: Literal["always", "batch", "never"] = Field("batch", alias="LOG_FSYNC")
    # the local log rolls a partition to a new segment file past this size
    log_segment_bytes: int = Field(256 * 1024 * 1024, ge=4096, alias="LOG_SEGMENT_BYTES")

    # --- OTLP receiver (ingest/) ------------------------------------------------
    otlp_host: str = Field("127.0.0.1", alias="OTLP_HOST")
    otlp_http_port: int = Field(4318, ge=0, le=65535, alias="OTLP_HTTP_PORT")
    otlp_grpc_port: int = Field(4317, ge=0, le=65535, alias="OTLP_GRPC_PORT")
    otlp_max_body_bytes: int = Field(20 * 1024 * 1024, gt=0, alias="OTLP_MAX_BODY_BYTES")
    # processes that decode and map requests beside the receiver's own (0: map in the receiver's process)
    otlp_workers: int = Field(2, ge=0, le=64, alias="OTLP_WORKERS")

    # --- generator -----------------------------------------------------------
    events_per_second: float = Field(10, gt=0, alias="EVENTS_PER_SECOND")
    anomaly_probability: float = Field(0.05, ge=0, le=1, alias="ANOMALY_PROBABILITY")

    # --- spark ---------------------------------------------------------------
    spark_master: str = Field("local[2]", alias="SPARK_MASTER")
    spark_ui: bool = Field(False, alias="SPARK_UI")
    spark_source: Literal["python", "native"] = Field("python", alias="SPARK_SOURCE")
    # how the source parses a range: "vector" (column checks, spark.vector_parse) or "per_line"
    # (orjson + validate_event each line: the earlier path, kept as the benchmark's baseline)
    spark_parse: Literal["vector", "per_line"] = Field("vector", alias="SPARK_PARSE")
    watermark_seconds: int = Field(60, ge=0, alias="WATERMARK_SECONDS")
    # 3 s: publish -> service_metrics row p95 ~4.1 s at 10,000 events/s (issue 17's goal: <= 5 s);
    # 5 s spends ~30% less CPU at that rate for p95 ~6.2 s (a micro-batch has ~1 CPU-s of fixed work)
    trigger_seconds: float = Field(3, gt=0, alias="TRIGGER_SECONDS")
    max_events_per_batch: int = Field(500_000, gt=0, alias="MAX_EVENTS_PER_BATCH")
    spark_driver_memory: str = Field("1g", alias="SPARK_DRIVER_MEMORY")
    # `python -m spark.streaming_job --available-now`: end Spark's idle Python Data Source planner
    # daemons once every query has read rows (spark.planners: ~0.3 GB RSS); a continuous job, or
    # one sharing its session, keeps them
    spark_reap_planners: bool = Field(True, alias="SPARK_REAP_PLANNERS")
    # map the JVM's classes from the class-data-sharing archive `make setup` builds
    # (spark.class_archive: ~4 CPU-s less per job start) when one exists for this JVM and Spark
    spark_class_archive: bool = Field(True, alias="SPARK_CLASS_ARCHIVE")
    # more JVM options for the Spark driver (appended to the job's own)
    spark_java_options: str = Field("", alias="SPARK_JAVA_OPTIONS")
    # per partition: an event whose event_id occurred this many offsets before it or fewer is a
    # duplicate (a producer's retry after a lost acknowledgement) and is dropped; 0 = off
    dedup_horizon_events: int = Field(50_000, ge=0, alias="DEDUP_HORIZON_EVENTS")

    # --- detection -----------------------------------------------------------
    detect_interval_seconds: float = Field(15, gt=0, alias="DETECT_INTERVAL_SECONDS")
    # Continuous mode: how often the detector checks (one read) whether a window became final; a
    # full cycle runs as soon as one did, else every DETECT_INTERVAL_SECONDS (issue 17).
    detect_poll_seconds: float = Field(1, gt=0, alias="DETECT_POLL_SECONDS")
    # A window is final for the detector once the stream's newest event time (capped at the wall
    # clock) is this far past its end, or once the Spark watermark passed it, whichever is first;
    # the settle time applies only while the newest event is within WATERMARK_SECONDS of the wall clock.
    # The Spark job keeps the window open for late rows until WATERMARK_SECONDS (the rows still
    # refine service_metrics, but the window is scored once). A large value (3600): the watermark only.
    detect_settle_seconds: float = Field(5, ge=0, alias="DETECT_SETTLE_SECONDS")
    # How long one detector access waits out a locked DuckDB file before the cycle fails and backs off.
    detect_lock_wait_seconds: float = Field(60, gt=0, alias="DETECT_LOCK_WAIT_SECONDS")
    # JSON object service -> p95 SLA in ms, e.g. {"checkout": 400}
    service_slas: dict[str, float] = Field(default_factory=dict, alias="SERVICE_SLAS")
    torch_device: str = Field("auto", alias="TORCH_DEVICE")

    # --- forecasts and SLA risk (anomaly_detection.forecaster) ------------------
    # how often the forecaster looks for a newly completed 5-minute bucket (it refits once per bucket)
    forecast_interval_seconds: float = Field(60, gt=0, alias="FORECAST_INTERVAL_SECONDS")
    forecast_history_days: float = Field(3, gt=0, alias="FORECAST_HISTORY_DAYS")
    # level (%) of the stored prediction intervals (forecasts.lower/upper)
    forecast_interval_level: int = Field(90, ge=50, le=99, alias="FORECAST_INTERVAL_LEVEL")
    # a service is at risk when the chance of crossing an SLA within the hour is at least this
    forecast_risk_probability: float = Field(0.5, gt=0, le=1, alias="FORECAST_RISK_PROBABILITY")
    forecast_keep_hours: float = Field(24, gt=0, alias="FORECAST_KEEP_HOURS")
    # JSON object service -> p99 SLA in ms; a service not named gets one learned from its own history
    service_p99_slas: dict[str, float] = Field(default_factory=dict, alias="SERVICE_P99_SLAS")
    # the server-error share (5xx / requests) no service should exceed
    error_rate_sla: float = Field(0.05, gt=0, le=1, alias="ERROR_RATE_SLA")

    # --- SQL console (dashboard page "SQL") ----------------------------------------
    sql_console_timeout_seconds: float = Field(10, gt=0, alias="SQL_CONSOLE_TIMEOUT_SECONDS")
    sql_console_max_rows: int = Field(5000, ge=1, alias="SQL_CONSOLE_MAX_ROWS")

    # --- llm -------------------------------------------------------------------
    ollama_url: str = Field("http://127.0.0.1:11434", alias="OLLAMA_URL")
    ollama_model: str = Field("qwen2.5-coder:0.5b", alias="OLLAMA_MODEL")
    llm_timeout_seconds: float = Field(60, gt=0, alias="LLM_TIMEOUT_SECONDS")
    narrate_interval_seconds: float = Field(15, gt=0, alias="NARRATE_INTERVAL_SECONDS")
    # GGUF file for the local model server; empty = the file assembled for OLLAMA_MODEL
    llm_model_file: Path | None = Field(None, alias="LLM_MODEL_FILE")
    llm_threads: int = Field(2, ge=1, alias="LLM_THREADS")
    # the model server refuses (413) request bodies and prompts over these, before reading/tokenising them
    model_server_max_body_bytes: int = Field(1024 * 1024, gt=0, alias="MODEL_SERVER_MAX_BODY_BYTES")
    model_server_max_prompt_chars: int = Field(32_768, gt=0, alias="MODEL_SERVER_MAX_PROMPT_CHARS")

    # --- alert notifications (python -m anomaly_detection.notifier) ------------
    # Channels: comma-separated URLs; empty = that channel is off. Email is on when ALERT_SMTP_HOST
    # and ALERT_EMAIL_TO are set.
    alert_webhook_urls: str = Field("", alias="ALERT_WEBHOOK_URLS")
    alert_slack_webhook_urls: str = Field("", alias="ALERT_SLACK_WEBHOOK_URLS")
    alert_smtp_host: str = Field("", alias="ALERT_SMTP_HOST")
    alert_smtp_port: int = Field(25, ge=1, le=65535, alias="ALERT_SMTP_PORT")
    alert_smtp_user: str = Field("", alias="ALERT_SMTP_USER")
    alert_smtp_password: str = Field("", alias="ALERT_SMTP_PASSWORD")
    alert_smtp_starttls: bool = Field(False, alias="ALERT_SMTP_STARTTLS")
    alert_email_from: str = Field("observability@localhost", alias="ALERT_EMAIL_FROM")
    alert_email_to: str = Field("", alias="ALERT_EMAIL_TO")
    # incidents whose peak severity stays below this send nothing
    alert_min_severity: Literal["low", "medium", "high", "critical"] = Field("medium", alias="ALERT_MIN_SEVERITY")
    # a low-severity "forecast" notification when an SLA turns at risk (sla_risk.at_risk), once per episode;
    # ALERT_MIN_SEVERITY does not apply to it (it is for incidents)
    alert_forecasts: bool = Field(True, alias="ALERT_FORECASTS")
    # an incident still open is notified again ("reminder") after this many minutes without a notification; 0 = never
    alert_repeat_minutes: float = Field(0, ge=0, alias="ALERT_REPEAT_MINUTES")
    # "HH:MM-HH:MM" in ALERT_TIMEZONE (may wrap midnight): deliveries below critical wait until it ends; empty = none
    alert_quiet_hours: str = Field("", pattern=r"^$|^\d{1,2}:\d{2}-\d{1,2}:\d{2}$", alias="ALERT_QUIET_HOURS")
    alert_timezone: str = Field("UTC", alias="ALERT_TIMEZONE")
    # base of the dashboard links in notifications; empty = http://DASHBOARD_HOST:DASHBOARD_PORT
    alert_dashboard_url: str = Field("", alias="ALERT_DASHBOARD_URL")
    alert_interval_seconds: float = Field(15, gt=0, alias="ALERT_INTERVAL_SECONDS")
    alert_timeout_seconds: float = Field(10, gt=0, alias="ALERT_TIMEOUT_SECONDS")
    # retry waits: ALERT_RETRY_SECONDS * 2**(attempts-1), at most ALERT_RETRY_MAX_SECONDS; give up after ALERT_MAX_ATTEMPTS
    alert_retry_seconds: float = Field(30, gt=0, alias="ALERT_RETRY_SECONDS")
    alert_retry_max_seconds: float = Field(1800, gt=0, alias="ALERT_RETRY_MAX_SECONDS")
    alert_max_attempts: int = Field(20, ge=1, alias="ALERT_MAX_ATTEMPTS")
    # incidents last changed before this many minutes ago, never notified, are history: no notification
    alert_lookback_minutes: float = Field(60, gt=0, alias="ALERT_LOOKBACK_MINUTES")

    # --- the platform's own Prometheus metrics (observability.metrics) ----------
    # each long-running service serves /metrics on its own port; 0 = off
    metrics_host: str = Field("127.0.0.1", alias="METRICS_HOST")
    metrics_port_generator: int = Field(9101, ge=0, le=65535, alias="METRICS_PORT_GENERATOR")
    metrics_port_ingest: int = Field(9102, ge=0, le=65535, alias="METRICS_PORT_INGEST")
    metrics_port_spark: int = Field(9103, ge=0, le=65535, alias="METRICS_PORT_SPARK")
    metrics_port_detector: int = Field(9104, ge=0, le=65535, alias="METRICS_PORT_DETECTOR")
    metrics_port_narrator: int = Field(9105, ge=0, le=65535, alias="METRICS_PORT_NARRATOR")
    metrics_port_model_server: int = Field(9106, ge=0, le=65535, alias="METRICS_PORT_MODEL_SERVER")
    metrics_port_notifier: int = Field(9107, ge=0, le=65535, alias="METRICS_PORT_NOTIFIER")
    metrics_port_forecaster: int = Field(9108, ge=0, le=65535, alias="METRICS_PORT_FORECASTER")
    metrics_port_indexer: int = Field(9109, ge=0, le=65535, alias="METRICS_PORT_INDEXER")
    # --- search (llm.indexer, llm.search, the dashboard's Search page) ------------
    search_index_interval_seconds: float = Field(30, gt=0, alias="SEARCH_INDEX_INTERVAL_SECONDS")
    # CPU threads the embedding model may use (indexer batches; a query embeds on one)
    embedding_threads: int = Field(1, ge=1, alias="EMBEDDING_THREADS")
    embedding_batch_size: int = Field(64, ge=1, le=4096, alias="EMBEDDING_BATCH_SIZE")
    # results below this cosine similarity are not shown (CLI default, dashboard slider default)
    search_min_similarity: float = Field(0.25, ge=-1, le=1, alias="SEARCH_MIN_SIMILARITY")
    # a trace's spans are read this long after its newest bronze file, so a trace split across
    # micro-batches is indexed whole (the text is rebuilt when more of its spans arrive)
    search_trace_slack_seconds: float = Field(300, ge=0, alias="SEARCH_TRACE_SLACK_SECONDS")
    # the persisted IVF index (observability.vector_index): the indexer trains it once a model has
    # this many distinct vectors, retrains it when the count has grown by this factor since; a
    # query scores the vectors of the SEARCH_INDEX_PROBES nearest lists (0: lists/32, at least 1)
    # of SEARCH_INDEX_LISTS
    search_index_min_vectors: int = Field(20_000, ge=1, alias="SEARCH_INDEX_MIN_VECTORS")
    search_index_retrain_growth: float = Field(2.0, gt=1, alias="SEARCH_INDEX_RETRAIN_GROWTH")
    search_index_probes: int = Field(0, ge=0, alias="SEARCH_INDEX_PROBES")
    search_index_lists: int = Field(0, ge=0, alias="SEARCH_INDEX_LISTS")  # 0: sqrt(vectors)

    # --- airflow / dashboard / retention -------------------------------------
    # operational rows (dead letters, progress, health checks, quality results, outbox, commits)
    retention_days: int = Field(7, ge=1, alias="RETENTION_DAYS")
    # per layer (observability.layers): bronze = raw span Parquet and raw OTLP logs/metrics rows;
    # silver = enriched span Parquet; gold = aggregates, anomalies, incidents, error_messages, sampled traces
    bronze_retention_days: int = Field(7, ge=1, alias="BRONZE_RETENTION_DAYS")
    silver_retention_days: int = Field(90, ge=1, alias="SILVER_RETENTION_DAYS")
    gold_retention_days: int = Field(365, ge=1, alias="GOLD_RETENTION_DAYS")
    # gold trace sampling, decided per trace by a hash of its id (a kept trace is kept whole)
    sample_error_rate: float = Field(1.0, ge=0, le=1, alias="SAMPLE_ERROR_RATE")
    sample_slow_rate: float = Field(0.5, ge=0, le=1, alias="SAMPLE_SLOW_RATE")
    sample_normal_rate: float = Field(0.01, ge=0, le=1, alias="SAMPLE_NORMAL_RATE")
    airflow_port: int = Field(8080, alias="AIRFLOW_PORT")
    airflow_admin_password: str | None = Field(None, alias="AIRFLOW_ADMIN_PASSWORD")
    dashboard_host: str = Field("127.0.0.1", alias="DASHBOARD_HOST")
    dashboard_port: int = Field(8501, alias="DASHBOARD_PORT")
    dashboard_refresh_seconds: int = Field(30, ge=1, alias="DASHBOARD_REFRESH_SECONDS")

    # --- health checks and data quality (dags/, observability.health/.quality) ----
    # A component is healthy while its newest sign of life is at most this old,
    # degraded up to 3x, unhealthy beyond (or when there is none).
    health_progress_max_age_seconds: float = Field(120, gt=0, alias="HEALTH_PROGRESS_MAX_AGE_SECONDS")
    health_metrics_max_age_seconds: float = Field(300, gt=0, alias="HEALTH_METRICS_MAX_AGE_SECONDS")
    health_heartbeat_max_age_seconds: float = Field(120, gt=0, alias="HEALTH_HEARTBEAT_MAX_AGE_SECONDS")
    health_narration_max_age_seconds: float = Field(600, gt=0, alias="HEALTH_NARRATION_MAX_AGE_SECONDS")
    health_http_timeout_seconds: float = Field(5, gt=0, alias="HEALTH_HTTP_TIMEOUT_SECONDS")
    quality_lookback_hours: float = Field(6, gt=0, alias="QUALITY_LOOKBACK_HOURS")
    quality_max_gap_ratio: float = Field(0.05, ge=0, le=1, alias="QUALITY_MAX_GAP_RATIO")
    quality_dead_letter_max_ratio: float = Field(0.05, ge=0, le=1, alias="QUALITY_DEAD_LETTER_MAX_RATIO")

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.duckdb_path is None:
            self.duckdb_path = self.data_dir / "observability.duckdb"
        return self

    # Derived locations: everything the platform writes lives under DATA_DIR.
    @property
    def log_dir(self) -> Path:
        """Embedded durable log (the `local` transport)."""
        return self.data_dir / "log"

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def bronze_dir(self) -> Path:
        return self.data_dir / "bronze"

    @property
    def silver_dir(self) -> Path:
        """Enriched spans (observability.layers), `date=YYYY-MM-DD/service=NAME/`."""
        return self.data_dir / "silver"

    @property
    def gold_dir(self) -> Path:
        """Sampled whole traces (observability.layers), `traces/date=YYYY-MM-DD/`."""
        return self.data_dir / "gold"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        """Service log files (make local)."""
        return self.data_dir / "logs"

    @property
    def airflow_home(self) -> Path:
        return self.data_dir / "airflow"

    @property
    def ollama_host_port(self) -> tuple[str, int]:
        url = urlparse(self.ollama_url)
        return url.hostname or "127.0.0.1", url.port or 11434

    @property
    def topics(self) -> list[str]:
        return [
            self.raw_events_topic,
            self.aggregated_topic,
            self.anomalies_topic,
            self.dead_letter_topic,
            self.logs_topic,
            self.metrics_topic,
        ]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (cached); tests build `Settings(...)` directly."""
    return Settings()
