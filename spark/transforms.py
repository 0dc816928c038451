"""Pure DataFrame -> DataFrame functions of the job (unit-tested on a local session).

Input: an events DataFrame with `timestamp` (TIMESTAMP, UTC), `service`,
`endpoint`, `status_code`, `latency_ms`, `kind` and `parent_span_id`. Request
metrics count entry spans only (`observability.schema.ENTRY_KINDS`). The
per-batch trace samples and call edges are computed where a range is parsed
(`spark.side_outputs`).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from observability.schema import ENTRY_KINDS

WINDOW = "1 minute"
PERCENTILES = (0.5, 0.95, 0.99)
# percentile_approx's accuracy: a returned value's rank is within n / accuracy of the target rank.
PERCENTILE_ACCURACY = 10_000


def is_error(status: Column) -> Column:
    """Server errors count as errors (status >= 500); 4xx are client errors."""
    return status >= 500


def is_client_error(status: Column) -> Column:
    return (status >= 400) & (status < 500)


def is_entry_span(kind: Column, parent_span_id: Column) -> Column:
    """A request a service handled: a SERVER or CONSUMER span, or a root span of any kind."""
    return kind.isin(*ENTRY_KINDS) | parent_span_id.isNull()


def entry_spans(events: DataFrame) -> DataFrame:
    """The spans request metrics count; CLIENT, INTERNAL and PRODUCER child spans are
    work inside a request (their time is already in the entry span's latency)."""
    return events.where(is_entry_span(F.col("kind"), F.col("parent_span_id")))


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
    """1-minute tumbling windows of entry spans per (service) and per (service, endpoint).

    Works on a batch DataFrame and on a stream (after `withWatermark`). Rows
    with `endpoint` NULL are the service level.
    """
    status = F.col("status_code")
    grouped = with_service_level(entry_spans(events)).groupBy(
        F.window("timestamp", WINDOW).alias("window"), "service", "endpoint"
    )
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
