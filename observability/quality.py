"""Data quality checks and retention, run by `data_quality_dag`.

Validation looks at the last `QUALITY_LOOKBACK_HOURS` of data for values no
real window can have, missing windows of services that are sending, duplicate
keys and a growing dead-letter stream, and writes one `data_quality_results`
row per check (status pass | warn | fail). Retention deletes what is older
than its layer's age from DuckDB (gold: GOLD_RETENTION_DAYS, bronze:
BRONZE_RETENTION_DAYS, operational rows: RETENTION_DAYS), drops whole bronze
hour partitions and silver and gold date partitions past their layer's age,
then checkpoints DuckDB so the file gives the space back. Both are
idempotent: a rerun records a fresh verdict and deletes nothing new.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from observability import tables
from observability.logs import get_logger
from observability.settings import Settings, get_settings
from observability.store import Store, utcnow

log = get_logger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"
METRIC_TABLES = (tables.SERVICE_METRICS, tables.ENDPOINT_METRICS)

# Rows no real 1-minute window can have: rule name -> SQL predicate on a metrics row.
IMPOSSIBLE_VALUE_RULES = {
    "negative_counts": "request_count < 0 OR error_count < 0 OR client_error_count < 0",
    "errors_exceed_requests": "error_count > request_count OR client_error_count > request_count",
    "error_rate_out_of_range": "error_rate < 0 OR error_rate > 1 OR isnan(error_rate)",
    "percentile_order": "p50_latency_ms > p95_latency_ms OR p95_latency_ms > p99_latency_ms",
    "negative_latency": (
        "avg_latency_ms < 0 OR p50_latency_ms < 0 OR p95_latency_ms < 0 OR p99_latency_ms < 0 OR max_latency_ms < 0"
    ),
}

# Logical keys that must be unique. The metric tables enforce theirs with a
# primary key (checked anyway: a schema change must not lose it); an anomaly
# is one verdict per service, window and type (a rerun of the detector must
# not add a second).
UNIQUE_KEYS = {
    tables.SERVICE_METRICS: ("window_start", "service"),
    tables.ENDPOINT_METRICS: ("window_start", "service", "endpoint"),
    tables.ANOMALIES: ("service", "window_start", "anomaly_type"),
}


@dataclass(frozen=True)
class QualityResult:
    check_name: str
    status: str  # pass | warn | fail
    observed: float | None
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


# -- validation --------------------------------------------------------------------
def check_impossible_values(store: Store, since: datetime) -> list[QualityResult]:
    out = []
    for rule, predicate in IMPOSSIBLE_VALUE_RULES.items():
        counts = {}
        for table in METRIC_TABLES:
            row = store.fetch_one(f"SELECT count(*) FROM {table} WHERE window_start >= ? AND ({predicate})", [since])
            counts[table] = int(row[0]) if row else 0
        total = sum(counts.values())
        detail = ", ".join(f"{t}: {n}" for t, n in counts.items()) + f" rows with {predicate}"
        out.append(QualityResult(f"impossible_values:{rule}", FAIL if total else PASS, total, detail))
    return out


def check_window_gaps(store: Store, since: datetime, max_gap_ratio: float) -> QualityResult:
    """Missing 1-minute windows between each active service's first and last window in the lookback."""
    rows = store.fetch_all(
        f"""SELECT service, count(DISTINCT window_start) AS present,
                   date_diff('minute', min(window_start), max(window_start)) + 1 AS expected
            FROM {tables.SERVICE_METRICS} WHERE window_start >= ?
            GROUP BY service ORDER BY service""",
        [since],
    )
    gaps = {svc: int(expected - present) for svc, present, expected in rows if expected > present}
    missing = sum(gaps.values())
    if not rows:
        return QualityResult("window_gaps", PASS, 0, "no active service in the lookback")
    worst = max((gaps[s] / e, s) for s, _, e in rows if s in gaps) if gaps else (0.0, None)
    status = PASS if not gaps else (FAIL if worst[0] > max_gap_ratio else WARN)
    detail = (
        f"{len(rows)} active services, no missing windows"
        if not gaps
        else "missing windows: "
        + ", ".join(f"{s}={n}" for s, n in gaps.items())
        + f"; worst {worst[1]} {worst[0]:.1%} (fail above {max_gap_ratio:.1%})"
    )
    return QualityResult("window_gaps", status, missing, detail)


def check_duplicate_keys(store: Store, since: datetime) -> list[QualityResult]:
    out = []
    for table, key in UNIQUE_KEYS.items():
        cols = ", ".join(key)
        row = store.fetch_one(
            f"SELECT count(*), coalesce(sum(n - 1), 0) FROM (SELECT {cols}, count(*) AS n FROM {table} "
            f"WHERE window_start >= ? GROUP BY {cols} HAVING count(*) > 1)",
            [since],
        )
        keys, extra = (int(row[0]), int(row[1])) if row else (0, 0)
        detail = f"{keys} keys ({cols}) with {extra} extra rows" if keys else f"({cols}) unique"
        out.append(QualityResult(f"duplicate_keys:{table}", FAIL if keys else PASS, extra, detail))
    return out


def check_dead_letter_growth(store: Store, since: datetime, until: datetime, max_ratio: float) -> QualityResult:
    """Dead letters in the lookback, against the events that got through and against the period before."""
    period = until - since
    row = store.fetch_one(
        f"""SELECT count(*) FILTER (WHERE received_at >= ?),
                   count(*) FILTER (WHERE received_at >= ? AND received_at < ?)
            FROM {tables.DEAD_LETTER} WHERE received_at >= ?""",
        [since, since - period, since, since - period],
    )
    current, previous = (int(row[0]), int(row[1])) if row else (0, 0)
    events = store.fetch_one(
        f"SELECT coalesce(sum(request_count), 0) FROM {tables.SERVICE_METRICS} WHERE window_start >= ?", [since]
    )
    valid = int(events[0]) if events else 0
    ratio = current / (current + valid) if current + valid else 0.0
    growing = current >= 10 and current > 2 * previous
    status = FAIL if ratio > max_ratio else (WARN if growing else PASS)
    detail = (
        f"{current} dead letters in the last {period}, {previous} in the period before; "
        f"{ratio:.2%} of {current + valid} events (fail above {max_ratio:.0%})"
    )
    return QualityResult("dead_letter_growth", status, current, detail)


def run_validation(
    settings: Settings | None = None, store: Store | None = None, now: datetime | None = None
) -> list[QualityResult]:
    settings = settings or get_settings()
    store = store or Store.from_settings(settings)
    now = now or utcnow()
    since = now - timedelta(hours=settings.quality_lookback_hours)
    results = [
        *check_impossible_values(store, since),
        check_window_gaps(store, since, settings.quality_max_gap_ratio),
        *check_duplicate_keys(store, since),
        check_dead_letter_growth(store, since, now, settings.quality_dead_letter_max_ratio),
    ]
    for r in results:
        if r.status != PASS:
            log.warning("data quality", check=r.check_name, status=r.status, observed=r.observed, detail=r.detail)
    return results


def record(results: list[QualityResult], store: Store, checked_at: datetime | None = None) -> int:
    checked_at = checked_at or utcnow()
    store.executemany(
        f"INSERT INTO {tables.DATA_QUALITY_RESULTS} (checked_at, check_name, status, observed, detail) VALUES (?, ?, ?, ?, ?)",
        [[checked_at, r.check_name, r.status, r.observed, r.detail] for r in results],
    )
    return len(results)


def failures(results: list[QualityResult]) -> list[QualityResult]:
    return [r for r in results if r.status == FAIL]


# -- retention ---------------------------------------------------------------------
# Each table belongs to one layer, and each layer has its own age limit:
# gold (aggregates, anomalies, incidents, error text: GOLD_RETENTION_DAYS, a year),
# bronze (raw OTLP log records and metric points, like the bronze span Parquet:
# BRONZE_RETENTION_DAYS) and operational rows (RETENTION_DAYS). Silver and gold
# Parquet go by whole date partitions (`observability.layers`).
GOLD, SILVER, BRONZE, OPERATIONAL = "gold", "silver", "bronze", "operational"

# table -> (layer, SQL predicate selecting the rows that expired before the cutoff `?`).
RETENTION_RULES: dict[str, tuple[str, str]] = {
    tables.SERVICE_METRICS: (GOLD, "window_start < ?"),
    tables.ENDPOINT_METRICS: (GOLD, "window_start < ?"),
    tables.TRACE_SAMPLES: (GOLD, "window_start < ?"),
    tables.SERVICE_DEPENDENCIES: (GOLD, "window_start < ?"),
    tables.ERROR_MESSAGES: (GOLD, "window_start < ?"),
    # a trace goes once its last span is past the cutoff: the index points into bronze
    tables.TRACE_INDEX: (BRONZE, "end_time < ?"),
    tables.ANOMALIES: (GOLD, "window_start < ?"),
    # an incident expires once its last change is older than the cutoff
    tables.INCIDENTS: (GOLD, "updated_at < ?"),
    # summaries go with their incident; an old summary also goes unless it is
    # the latest one of an incident that is kept (a stale narrator must not
    # leave a kept incident without any summary)
    tables.INCIDENT_SUMMARIES: (
        GOLD,
        f"incident_id NOT IN (SELECT id FROM {tables.INCIDENTS}) OR (created_at < ? AND id NOT IN ("
        f"SELECT arg_max(id, created_at) FROM {tables.INCIDENT_SUMMARIES} GROUP BY incident_id))",
    ),
    tables.LOGS: (BRONZE, "timestamp < ?"),
    tables.OTEL_METRICS: (BRONZE, "timestamp < ?"),
    tables.DEAD_LETTER: (OPERATIONAL, "received_at < ?"),
    # keep the newest progress row: it is the pipeline's last sign of life
    tables.STREAM_PROGRESS: (
        OPERATIONAL,
        f"processed_at < ? AND batch_id < (SELECT max(batch_id) FROM {tables.STREAM_PROGRESS})",
    ),
    tables.HEALTH_CHECKS: (OPERATIONAL, "checked_at < ?"),
    tables.DATA_QUALITY_RESULTS: (OPERATIONAL, "checked_at < ?"),
    # sent outbox records are on their topic; unsent ones are kept however old (they are still owed)
    tables.OUTBOX: (OPERATIONAL, "sent_at < ?"),
    # a week-old micro-batch is long committed in Spark's checkpoint and never replayed;
    # keep each sink's newest commit all the same
    tables.SINK_COMMITS: (
        OPERATIONAL,
        f"committed_at < ? AND batch_id < (SELECT max(c.batch_id) FROM {tables.SINK_COMMITS} c "
        f"WHERE c.sink = {tables.SINK_COMMITS}.sink)",
    ),
    # the notifier's record of what it sent goes with the incident (after INCIDENTS above): while the
    # incident is kept, its events and attempts are what stop a restart from notifying it again;
    # a forecast (SLA risk) key keeps its newest event: it says whether its risk episode is still open
    tables.ALERT_EVENTS: (
        OPERATIONAL,
        f"created_at < ? AND incident_id NOT IN (SELECT id FROM {tables.INCIDENTS}) "
        f"AND seq NOT IN (SELECT max(seq) FROM {tables.ALERT_EVENTS} "
        f"WHERE starts_with(incident_id, '{tables.ALERT_FORECAST_KEY_PREFIX}') GROUP BY incident_id)",
    ),
    tables.ALERT_DELIVERIES: (OPERATIONAL, f"event_id NOT IN (SELECT id FROM {tables.ALERT_EVENTS})"),
    # search: items go with their data (an incident's with the incident); a vector goes once no item
    # uses it (until then it is the content cache); bronze-file progress once the file is expired too
    tables.EMBEDDINGS: (
        OPERATIONAL,
        f"time < ? AND (kind <> 'incident' OR item_id NOT IN (SELECT id FROM {tables.INCIDENTS}))",
    ),
    tables.EMBEDDING_VECTORS: (
        OPERATIONAL,
        f"created_at < ? AND text_id NOT IN (SELECT text_id FROM {tables.EMBEDDINGS})",
    ),
    tables.EMBEDDING_PROGRESS: (OPERATIONAL, "indexed_at < ? AND starts_with(source, 'bronze:')"),
}


def retention_cutoff(settings: Settings, now: datetime | None = None) -> datetime:
    """The cutoff of operational rows (RETENTION_DAYS)."""
    return (now or utcnow()) - timedelta(days=settings.retention_days)


def retention_cutoffs(settings: Settings, now: datetime | None = None) -> dict[str, datetime]:
    """layer -> the time before which its data has expired."""
    now = now or utcnow()
    return {
        GOLD: now - timedelta(days=settings.gold_retention_days),
        SILVER: now - timedelta(days=settings.silver_retention_days),
        BRONZE: now - timedelta(days=settings.bronze_retention_days),
        OPERATIONAL: retention_cutoff(settings, now),
    }


def delete_expired_rows(store: Store, cutoff: datetime | dict[str, datetime]) -> dict[str, int]:
    """Delete every expired row in one transaction (one cutoff for all, or one per layer);
    returns rows deleted per table (in rule order)."""
    cutoffs = cutoff if isinstance(cutoff, dict) else dict.fromkeys((GOLD, SILVER, BRONZE, OPERATIONAL), cutoff)

    def work(con) -> dict[str, int]:
        deleted = {}
        for table, (layer, predicate) in RETENTION_RULES.items():
            params = [cutoffs[layer]] * predicate.count("?")
            before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            con.execute(f"DELETE FROM {table} WHERE {predicate}", params)
            deleted[table] = before - con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return deleted

    return store.write(work)


def expired_bronze_partitions(bronze_dir: Path, cutoff: datetime) -> list[Path]:
    """Hour partitions (`date=YYYY-MM-DD/hour=HH`) whose whole hour ended by the cutoff."""
    out = []
    for date_dir in sorted(Path(bronze_dir).glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            try:
                start = datetime.strptime(f"{date_dir.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H")
            except ValueError:
                log.warning("retention: not a bronze partition, kept", path=str(hour_dir))
                continue
            if start + timedelta(hours=1) <= cutoff:
                out.append(hour_dir)
    return out


def drop_bronze_partitions(bronze_dir: Path, cutoff: datetime) -> int:
    """Remove expired hour partitions, then date folders left empty; returns partitions dropped."""
    dropped = expired_bronze_partitions(bronze_dir, cutoff)
    for d in dropped:
        shutil.rmtree(d, ignore_errors=True)
    for date_dir in {d.parent for d in dropped}:
        if date_dir.is_dir() and not any(date_dir.iterdir()):
            date_dir.rmdir()
    return len(dropped)


def checkpoint(store: Store) -> None:
    """Write the WAL into the file and reclaim the space of deleted rows."""
    store.write(lambda con: con.execute("CHECKPOINT"))


def apply_retention(
    settings: Settings | None = None, store: Store | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Delete expired rows (per layer) and Parquet partitions; returns counts
    (`bronze_partitions`, `silver_partitions`, `gold_partitions` included)."""
    from observability import layers

    settings = settings or get_settings()
    store = store or Store.from_settings(settings)
    cutoffs = retention_cutoffs(settings, now)
    deleted = delete_expired_rows(store, cutoffs)
    deleted["bronze_partitions"] = drop_bronze_partitions(settings.bronze_dir, cutoffs[BRONZE])
    deleted["silver_partitions"] = layers.drop_date_partitions(settings.silver_dir, cutoffs[SILVER])
    deleted["gold_partitions"] = layers.drop_date_partitions(settings.gold_dir / "traces", cutoffs[GOLD])
    log.info("retention applied", **{f"cutoff_{k}": v.isoformat() for k, v in cutoffs.items()}, **deleted)
    return deleted


def _layer_of(name: str) -> str:
    if name in RETENTION_RULES:
        return RETENTION_RULES[name][0]
    return name.removesuffix("_partitions")  # bronze_partitions -> bronze


def retention_results(deleted: dict[str, int], cutoff: datetime | dict[str, datetime]) -> list[QualityResult]:
    """Retention counts as `data_quality_results` rows, so each run's deletions are on record."""
    results = []
    for name, n in deleted.items():
        at = cutoff[_layer_of(name)] if isinstance(cutoff, dict) else cutoff
        results.append(QualityResult(f"retention:{name}", PASS, n, f"deleted {n} older than {at:%Y-%m-%d %H:%M}"))
    return results
