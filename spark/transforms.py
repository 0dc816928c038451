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
from spark.partials import LATENCY_SKETCH_K

WINDOW = "1 minute"
PERCENTILES = (0.5, 0.95, 0.99)


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
            F.kll_sketch_agg_double("latency_ms", LATENCY_SKETCH_K).alias("sketch"),
            F.max("latency_ms").alias("max_latency_ms"),
        )
    )


def window_metrics_from_partials(partials: DataFrame) -> DataFrame:
    """The same windows as `window_metrics`, merged from `spark.partials` rows (one per
    window, service and endpoint of an offset range): counts and sums added, maxima
    taken, latency sketches merged. Works on a stream (after `withWatermark`)."""
    grouped = partials.groupBy(F.window("timestamp", WINDOW).alias("window"), "service", "endpoint")
    return _window_rows(
        grouped.agg(
            F.sum("request_count").alias("request_count"),
            F.sum("error_count").alias("error_count"),
            F.sum("client_error_count").alias("client_error_count"),
            F.sum("latency_sum").alias("latency_sum"),
            F.kll_merge_agg_double("latency_sketch", LATENCY_SKETCH_K).alias("sketch"),
            F.max("latency_max").alias("max_latency_ms"),
        )
    )


def _window_rows(agg: DataFrame) -> DataFrame:
    """The service_metrics / endpoint_metrics columns from a window's merged figures."""
    pct = F.kll_sketch_get_quantile_double("sketch", F.array(*[F.lit(q) for q in PERCENTILES]))
    return agg.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "service",
        "endpoint",
        F.col("request_count").cast("long").alias("request_count"),
        F.col("error_count").cast("long").alias("error_count"),
        F.col("client_error_count").cast("long").alias("client_error_count"),
        (F.col("error_count") / F.col("request_count")).alias("error_rate"),
        (F.col("latency_sum") / F.col("request_count")).alias("avg_latency_ms"),
        pct[0].alias("p50_latency_ms"),
        pct[1].alias("p95_latency_ms"),
        pct[2].alias("p99_latency_ms"),
        "max_latency_ms",
    )
