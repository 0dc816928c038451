"""Pure DataFrame -> DataFrame functions of the job (unit-tested on a local session).

Input everywhere: an events DataFrame with at least `timestamp` (TIMESTAMP, UTC),
`service`, `endpoint`, `status_code`, `latency_ms`; the trace functions also
use `trace_id`, `span_id`, `parent_span_id`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

WINDOW = "1 minute"
PERCENTILES = (0.5, 0.95, 0.99)
# percentile_approx's accuracy: a returned value's rank is within n / accuracy of the target rank.
PERCENTILE_ACCURACY = 10_000

ERROR_SAMPLE_CAP = 20  # every error trace of a (window, service), up to this many
SLOW_SAMPLE_COUNT = 5  # the slowest few non-error traces
NORMAL_SAMPLE_PERCENT = 1.0  # deterministic hash-based share of the other traces...
NORMAL_SAMPLE_CAP = 10  # ...up to this many
SAMPLE_CAPS = {"error": ERROR_SAMPLE_CAP, "slow": SLOW_SAMPLE_COUNT, "normal": NORMAL_SAMPLE_CAP}


def is_error(status: Column) -> Column:
    """Server errors count as errors (status >= 500); 4xx are client errors."""
    return status >= 500


def is_client_error(status: Column) -> Column:
    return (status >= 400) & (status < 500)


def window_start(ts: Column) -> Column:
    return F.window(ts, WINDOW).start


def window_end(ts: Column) -> Column:
    return F.window(ts, WINDOW).end


def with_service_level(events: DataFrame) -> DataFrame:
    """Each event twice: under its endpoint and under endpoint NULL (the service level).

    One stateful aggregation then yields both service_metrics and endpoint_metrics.
    """
    return events.select(
        "timestamp",
        "service",
        "status_code",
        "latency_ms",
        F.explode(F.array(F.col("endpoint"), F.lit(None).cast("string"))).alias("endpoint"),
    )


def window_metrics(events: DataFrame) -> DataFrame:
    """1-minute tumbling windows per (service) and per (service, endpoint).

    Works on a batch DataFrame and on a stream (after `withWatermark`). Rows
    with `endpoint` NULL are the service level.
    """
    status = F.col("status_code")
    grouped = with_service_level(events).groupBy(F.window("timestamp", WINDOW).alias("window"), "service", "endpoint")
    agg = grouped.agg(
        F.count(F.lit(1)).alias("request_count"),
        F.sum(F.when(is_error(status), 1).otherwise(0)).alias("error_count"),
        F.sum(F.when(is_client_error(status), 1).otherwise(0)).alias("client_error_count"),
        F.avg("latency_ms").alias("avg_latency_ms"),
        F.percentile_approx("latency_ms", list(PERCENTILES), PERCENTILE_ACCURACY).alias("pct"),
        F.max("latency_ms").alias("max_latency_ms"),
    )
    return agg.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "service",
        "endpoint",
        F.col("request_count").cast("long").alias("request_count"),
        F.col("error_count").cast("long").alias("error_count"),
        F.col("client_error_count").cast("long").alias("client_error_count"),
        (F.col("error_count") / F.col("request_count")).alias("error_rate"),
        "avg_latency_ms",
        F.col("pct")[0].alias("p50_latency_ms"),
        F.col("pct")[1].alias("p95_latency_ms"),
        F.col("pct")[2].alias("p99_latency_ms"),
        "max_latency_ms",
    )


def trace_samples(
    events: DataFrame,
    error_cap: int = ERROR_SAMPLE_CAP,
    slow_count: int = SLOW_SAMPLE_COUNT,
    normal_percent: float = NORMAL_SAMPLE_PERCENT,
    normal_cap: int = NORMAL_SAMPLE_CAP,
) -> DataFrame:
    """Trace ids kept for drill-down per (window_start, service), with a reason and rank.

    - error: every trace with a span of the service at status >= 500, up to
      `error_cap` (earliest first);
    - slow: the `slow_count` slowest other traces (by the service's slowest span);
    - normal: a deterministic hash-based `normal_percent` share of the rest,
      up to `normal_cap`.
    `rank` (1-based within reason) lets the sink keep the caps across batches.
    """
    per_trace = (
        events.where(F.col("trace_id").isNotNull())
        .groupBy(window_start(F.col("timestamp")).alias("window_start"), "service", "trace_id")
        .agg(
            F.max(F.when(is_error(F.col("status_code")), 1).otherwise(0)).alias("has_error"),
            F.max("latency_ms").alias("max_latency"),
            F.min("timestamp").alias("first_seen"),
        )
    )
    key = ["window_start", "service"]
    err_w = Window.partitionBy(*key, "has_error").orderBy("first_seen", "trace_id")
    slow_w = Window.partitionBy(*key, "has_error").orderBy(F.col("max_latency").desc(), "trace_id")
    bucket = F.pmod(F.xxhash64("trace_id"), F.lit(10_000))
    ranked = per_trace.select(
        *key,
        "trace_id",
        (F.col("has_error") == 1).alias("is_error"),
        F.row_number().over(err_w).alias("err_rank"),
        F.row_number().over(slow_w).alias("slow_rank"),
        (bucket < F.lit(int(normal_percent * 100))).alias("in_share"),
        bucket.alias("bucket"),
    )
    normal_candidate = (~F.col("is_error")) & (F.col("slow_rank") > slow_count) & F.col("in_share")
    norm_w = Window.partitionBy(*key, normal_candidate).orderBy("bucket", "trace_id")
    ranked = ranked.withColumn("norm_rank", F.row_number().over(norm_w))
    reason = (
        F.when(F.col("is_error") & (F.col("err_rank") <= error_cap), "error")
        .when(~F.col("is_error") & (F.col("slow_rank") <= slow_count), "slow")
        .when(normal_candidate & (F.col("norm_rank") <= normal_cap), "normal")
    )
    rank = (
        F.when(F.col("is_error"), F.col("err_rank"))
        .when(F.col("slow_rank") <= slow_count, F.col("slow_rank"))
        .otherwise(F.col("norm_rank"))
    )
    return (
        ranked.select(*key, "trace_id", reason.alias("reason"), rank.alias("rank"))
        .where(F.col("reason").isNotNull())
    )


def dependency_edges(events: DataFrame) -> DataFrame:
    """Caller -> callee edges seen in parent/child spans of the same trace.

    A child span (parent_span_id = the parent's span_id, same trace_id) of
    another service is one call; its status >= 500 is an erroring call. The
    edge's window is the child span's window.
    """
    parents = (
        events.where(F.col("trace_id").isNotNull() & F.col("span_id").isNotNull())
        .select("trace_id", F.col("span_id").alias("p_span_id"), F.col("service").alias("parent_service"))
        .dropDuplicates(["trace_id", "p_span_id"])
    )
    children = events.where(F.col("trace_id").isNotNull() & F.col("parent_span_id").isNotNull()).select(
        "trace_id", "parent_span_id", F.col("service").alias("child_service"), "status_code", "timestamp"
    )
    joined = children.join(
        parents,
        (children.trace_id == parents.trace_id) & (children.parent_span_id == parents.p_span_id),
    ).where(F.col("parent_service") != F.col("child_service"))
    return joined.groupBy(window_start(F.col("timestamp")).alias("window_start"), "parent_service", "child_service").agg(
        F.count(F.lit(1)).cast("long").alias("call_count"),
        F.sum(F.when(is_error(F.col("status_code")), 1).otherwise(0)).cast("long").alias("error_count"),
    )


def batch_stats(events: DataFrame, late_watermark_ms: int) -> DataFrame:
    """One row: valid rows, rows whose window had closed (later than the watermark), max event time.

    A row is late when its window ends at or before the watermark: Spark's
    window aggregation drops exactly those, so they are counted here.
    """
    wm = F.timestamp_millis(F.lit(int(late_watermark_ms)))
    return events.agg(
        F.count(F.lit(1)).cast("long").alias("rows"),
        F.coalesce(F.sum(F.when(window_end(F.col("timestamp")) <= wm, 1).otherwise(0)), F.lit(0)).cast("long").alias("rows_late"),
        F.unix_millis(F.max("timestamp")).alias("max_event_ms"),
    )
