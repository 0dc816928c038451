"""Partial window aggregates of one offset range, computed where the range is parsed.

Why: the job's JVM turned every valid event into a Spark row, doubling it (service and endpoint level) and feeding it to the
stateful aggregation one row at a time (issue 17). The source now hands Spark
one row per (1-minute window, service, endpoint) of the range, with the counts,
the latency sum and maximum, and a KLL sketch of the latencies (Apache
DataSketches' binary format, which Spark's `kll_merge_agg_double` reads). The
window's figures are then merged from these partials across ranges and
micro-batches: counts, sums and maxima exactly, percentiles through the sketch
(exact while a window holds at most `LATENCY_SKETCH_K` latencies, within
`PERCENTILE_RANK_ERROR` of the target rank beyond; `spark.transforms`). The
sketch keeps Spark's state per window bounded (at most ~3k doubles), as
percentile_approx's summary did: a plain list of latencies was tried and made
every live micro-batch re-read and re-sort its whole window (+14% CPU at
10,000 events/s).

A partial's `timestamp` is the newest event time of its group, so the
watermark (the newest event time seen) is the one the events themselves would
give, and every partial falls in the window of its events.
"""

from __future__ import annotations

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observability.schema import ENTRY_KINDS

# Sketch size: a window's percentiles are exact up to this many latencies, and beyond within
# PERCENTILE_RANK_ERROR of the target rank (DataSketches' single-sided bound at 99% confidence,
# 2.296 / k^0.9723: 7.1e-4; percentile_approx at accuracy 10,000, used before, guaranteed 1e-4).
# Why not larger: Spark's kll_merge_agg_double allocates k doubles per group up front (32 KB here),
# and k = 32,768 (the size that matches 1e-4) ran a 130-minute backlog's first batch, ~7,800 groups,
# out of the JVM's 1 GB heap.
LATENCY_SKETCH_K = 4_096
PERCENTILE_RANK_ERROR = 2.296 / LATENCY_SKETCH_K**0.9723

PARTIAL_FIELDS = (
    ("timestamp", pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
    ("service", pa.string(), "STRING"),
    ("endpoint", pa.string(), "STRING"),  # NULL: the service level
    ("request_count", pa.int64(), "BIGINT"),
    ("error_count", pa.int64(), "BIGINT"),
    ("client_error_count", pa.int64(), "BIGINT"),
    ("latency_sum", pa.float64(), "DOUBLE"),
    ("latency_max", pa.float64(), "DOUBLE"),
    ("latency_sketch", pa.binary(), "BINARY"),
)
PARTIAL_ARROW_SCHEMA = pa.schema([(name, arrow) for name, arrow, _ in PARTIAL_FIELDS])
PARTIAL_SCHEMA = ", ".join(f"{name} {ddl}" for name, _, ddl in PARTIAL_FIELDS)
_MINUTE_US = 60_000_000


def entry_mask(events: pa.Table) -> pa.ChunkedArray:
    """The spans request metrics count (`observability.schema.ENTRY_SPAN_SQL`)."""
    kind = pc.is_in(events["kind"], value_set=pa.array(ENTRY_KINDS))
    return pc.or_(pc.fill_null(kind, False), pc.is_null(events["parent_span_id"]))


def window_partials(events: pa.Table) -> pa.Table:
    """Valid events (bronze rows) -> one partial row per (window, service, endpoint) of entry
    spans, and one per (window, service) with endpoint NULL."""
    entries = events.filter(entry_mask(events))
    if entries.num_rows == 0:
        return PARTIAL_ARROW_SCHEMA.empty_table()
    ts = pc.cast(entries["timestamp"], pa.timestamp("us", tz="UTC")).combine_chunks()
    ts_us = ts.cast(pa.int64()).to_numpy()
    minute = np.floor_divide(ts_us, _MINUTE_US)
    service = pc.dictionary_encode(entries["service"].combine_chunks())
    endpoint = pc.dictionary_encode(entries["endpoint"].combine_chunks())
    status = entries["status_code"].combine_chunks().to_numpy(zero_copy_only=False)
    latency = entries["latency_ms"].combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64)
    s_codes = service.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    e_codes = pc.fill_null(endpoint.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    n_endpoints = len(endpoint.dictionary) + 1
    base = (minute - minute.min()) * len(service.dictionary) + s_codes
    columns = (ts_us, status, latency)
    parts = [
        _group(base * n_endpoints + e_codes, columns, service.dictionary, s_codes, endpoint.dictionary, e_codes),
        _group(base, columns, service.dictionary, s_codes, None, None),
    ]
    return pa.concat_tables(parts)


def _group(key, columns, services, s_codes, endpoints, e_codes) -> pa.Table:
    """One partial row per distinct `key`; endpoint NULL when `endpoints` is None."""
    ts_us, status, latency = columns
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    first = order[starts]
    lat = latency[order]
    st = status[order]
    counts = np.diff(np.r_[starts, len(order)])
    sketches = [_sketch(chunk) for chunk in np.split(lat, starts[1:])]
    names = services.to_pylist()
    if endpoints is None:
        endpoint = [None] * len(starts)
    else:
        labels = endpoints.to_pylist()
        endpoint = [labels[c - 1] if c > 0 else None for c in e_codes[first]]
    return pa.Table.from_arrays(
        [
            pa.array(np.maximum.reduceat(ts_us[order], starts)).cast(pa.timestamp("us", tz="UTC")),
            pa.array([names[c] for c in s_codes[first]], pa.string()),
            pa.array(endpoint, pa.string()),
            pa.array(counts, pa.int64()),
            pa.array(np.add.reduceat((st >= 500).astype(np.int64), starts)),
            pa.array(np.add.reduceat(((st >= 400) & (st < 500)).astype(np.int64), starts)),
            pa.array(np.add.reduceat(lat, starts)),
            pa.array(np.maximum.reduceat(lat, starts)),
            pa.array(sketches, pa.binary()),
        ],
        schema=PARTIAL_ARROW_SCHEMA,
    )


def _sketch(latencies: np.ndarray) -> bytes:
    sketch = datasketches.kll_doubles_sketch(LATENCY_SKETCH_K)
    sketch.update(np.ascontiguousarray(latencies))
    return sketch.serialize()
