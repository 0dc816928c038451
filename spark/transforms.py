"""Pure DataFrame -> DataFrame functions of the job (unit-tested on a local session).

Input: an events DataFrame with `timestamp` (TIMESTAMP, UTC), `service`,
`endpoint`, `status_code`, `latency_ms`, `kind` and `parent_span_id`. Request
metrics count entry spans only (`observability.schema.ENTRY_KINDS`). The
per-batch trace samples and call edges are computed where a range is parsed
(`spark.side_outputs`), and so are the job's partial window aggregates
(`spark.partials`), which `window_metrics_from_partials` merges.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from observability.schema import ENTRY_KINDS

WINDOW = "1 minute"
PERCENTILES = {"p50_latency_ms": 50, "p95_latency_ms": 95, "p99_latency_ms": 99}  # nearest rank, exact


def nearest_rank(sorted_values: Column, percent: int) -> Column:
    """The percentile of a sorted array by nearest rank: the smallest value with at least
    `percent`% of the values at or below it, element ceil(percent * n / 100) counting from 1
    (in integers: a float q * n can land a hair above a whole number and round up)."""
    n = F.size(sorted_values)
    return F.element_at(sorted_values, F.greatest(F.lit(1), F.floor((n * percent + 99) / 100).cast("int")))


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
    with `endpoint` NULL are the service level. The job itself merges the
    source's partials (`window_metrics_from_partials`); both give the same rows.
    """
    status = F.col("status_code")
    grouped = with_service_level(entry_spans(events)).groupBy(
        F.window("timestamp", WINDOW).alias("window"), "service", "endpoint"
    )
    return _window_rows(
        grouped.agg(
            F.count(F.lit(1)).alias("request_count"),
            F.sum(F.when(is_error(status), 1).otherwise(0)).alias("error_count"),
            F.sum(F.when(is_client_error(status), 1).otherwise(0)).alias("client_error_count"),
            F.sum("latency_ms").alias("latency_sum"),
            F.collect_list("latency_ms").alias("latencies"),
            F.max("latency_ms").alias("max_latency_ms"),
        )
    )


def window_metrics_from_partials(partials: DataFrame) -> DataFrame:
    """The same windows as `window_metrics`, merged from `spark.partials` rows (one per
    window, service and endpoint of an offset range): counts and sums added, maxima
    taken, latency lists concatenated. Works on a stream (after `withWatermark`)."""
    grouped = partials.groupBy(F.window("timestamp", WINDOW).alias("window"), "service", "endpoint")
    return _window_rows(
        grouped.agg(
            F.sum("request_count").alias("request_count"),
            F.sum("error_count").alias("error_count"),
            F.sum("client_error_count").alias("client_error_count"),
            F.sum("latency_sum").alias("latency_sum"),
            F.flatten(F.collect_list("latencies")).alias("latencies"),
            F.max("latency_max").alias("max_latency_ms"),
        )
    )


def _window_rows(agg: DataFrame) -> DataFrame:
    """The service_metrics / endpoint_metrics columns from a window's merged figures."""
    return agg.withColumn("latencies", F.array_sort("latencies")).select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "service",
        "endpoint",
        F.col("request_count").cast("long").alias("request_count"),
        F.col("error_count").cast("long").alias("error_count"),
        F.col("client_error_count").cast("long").alias("client_error_count"),
        (F.col("error_count") / F.col("request_count")).alias("error_rate"),
        (F.col("latency_sum") / F.col("request_count")).alias("avg_latency_ms"),
        *[nearest_rank(F.col("latencies"), pct).alias(name) for name, pct in PERCENTILES.items()],
        "max_latency_ms",
    )
