"""The logs and metrics topics: each offset range parsed once, judged by the shared validators.

A log record or metric point is one JSON value (`observability.records`). The
source's `read()` validates every record of its range with the same function
the receiver uses before publishing (`validate_log_record`,
`validate_metric_point`), and yields one Arrow table per range whose rows are
either a valid record (the `logs` / `otel_metrics` columns, the `reject_*`
columns NULL) or a reject (only the `reject_*` columns: when, where, why, the
payload). The sink (`foreachBatch`) splits them and writes the records, the
dead letters and its commit row in one DuckDB transaction.

Nothing here needs Spark's aggregation, so there is no staging: a replayed
range yields the same rows, and the sink's commit row makes the write
happen once.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import pyarrow as pa

from observability import tables
from observability.columns import Column, arrow_schema, names, spark_ddl
from observability.records import LOG_COLUMNS, METRIC_COLUMNS, validate_log_record, validate_metric_point
from observability.schema import MAX_LINE_BYTES, InvalidEvent, decode_line
from observability.transport.base import Record
from spark.staging import _payload_text

REJECT_COLUMNS = (
    Column("reject_received_at_ms", "bigint"),
    Column("reject_source", "string"),
    Column("reject_reason", "string"),
    Column("reject_payload", "string"),
)
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class RecordStream:
    """One OTLP record topic: its DuckDB table, its columns and its judge."""

    name: str  # the Spark query's name and checkpoint folder
    table: str
    columns: tuple[Column, ...]
    validate: Callable[..., dict]

    @property
    def fields(self) -> tuple[str, ...]:
        return names(self.columns)

    @property
    def stream_columns(self) -> tuple[Column, ...]:
        return (*self.columns, *REJECT_COLUMNS)

    def spark_schema(self) -> str:
        return spark_ddl(self.stream_columns)

    def arrow_schema(self) -> pa.Schema:
        return arrow_schema(self.stream_columns, timestamp=pa.timestamp("us", tz="UTC"))


LOGS = RecordStream("logs", tables.LOGS, LOG_COLUMNS, validate_log_record)
OTEL_METRICS = RecordStream("otel_metrics", tables.OTEL_METRICS, METRIC_COLUMNS, validate_metric_point)
STREAMS = {s.name: s for s in (LOGS, OTEL_METRICS)}


def judge(stream: RecordStream, raw: bytes, now_ms: int) -> dict:
    """The validator's verdict on one topic value (orjson first; whatever it refuses, and
    every rejected value, goes through `decode_line` so the reason is the shared one)."""
    if len(raw) <= MAX_LINE_BYTES:
        try:
            return stream.validate(orjson.loads(raw), now_ms=now_ms)
        except (orjson.JSONDecodeError, InvalidEvent):
            pass
    return stream.validate(decode_line(raw), now_ms=now_ms)


def _clean(value):
    """Storable JSON: lone surrogates -> U+FFFD (DuckDB's JSON refuses them), non-finite -> null."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def json_text(value) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):  # lone surrogates, ints beyond 64 bits
        return json.dumps(_clean(value), separators=(",", ":"), ensure_ascii=False)


def _storable(row: dict) -> dict:
    for key, value in row.items():
        if key == "attributes":
            row[key] = None if value is None else json_text(value)
        elif isinstance(value, str):
            row[key] = _SURROGATE.sub("\ufffd", value)
    return row


def parse_range(stream: RecordStream, topic: str, records: Iterable[Record]) -> pa.Table:
    """Valid rows and rejects of one range, in the stream's Arrow schema."""
    schema = stream.arrow_schema()
    cols: dict[str, list] = {name: [] for name in schema.names}
    fields = stream.fields
    rejects = names(REJECT_COLUMNS)
    wall_ms = int(time.time() * 1000)
    for rec in records:
        # the record's publish time is "now" for the future-timestamp rule: a replay judges alike
        now_ms = rec.timestamp_ms if rec.timestamp_ms and rec.timestamp_ms > 0 else wall_ms
        try:
            row = _storable(judge(stream, rec.value, now_ms))
        except Exception as exc:  # noqa: BLE001 - one poison record must not fail the range (and loop)
            reason = str(exc) if isinstance(exc, InvalidEvent) else f"record: {type(exc).__name__}: {exc}"[:500]
            for name in fields:
                cols[name].append(None)
            for name, value in zip(
                rejects,
                (now_ms, f"spark:{topic}:{rec.partition}:{rec.offset}", reason, _payload_text(rec.value)),
                strict=True,
            ):
                cols[name].append(value)
            continue
        for name in fields:
            cols[name].append(row[name])
        for name in rejects:
            cols[name].append(None)
    arrays = []
    for field in schema:
        values = cols[field.name]
        if field.name == "timestamp":
            arrays.append(pa.array(values, pa.int64()).cast(pa.timestamp("ms")).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def split(batch: pa.Table, stream: RecordStream) -> tuple[pa.Table, pa.Table]:
    """A micro-batch (from `toArrow`) -> (valid records with naive UTC timestamps, dead-letter rows)."""
    import pyarrow.compute as pc

    rejected = pc.is_valid(batch.column("reject_reason"))
    valid = batch.filter(pc.invert(rejected)).select(list(stream.fields))
    ts = valid.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    valid = valid.set_column(valid.schema.get_field_index("timestamp"), "timestamp", ts)
    dead = batch.filter(rejected).select(list(names(REJECT_COLUMNS)))
    dead = dead.rename_columns(["received_at_ms", "source", "reason", "payload"])
    return valid, dead
