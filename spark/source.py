"""Spark 4 Python Data Sources over the platform's transport (local log or Kafka).

Offsets are Kafka's model, exactly like Spark's own Kafka source: a JSON
object `{partition: next_offset}` per micro-batch in Spark's checkpoint (offset
log), read with explicit partition assignment (no consumer group). A
micro-batch is capped at `max_rows` records (`MAX_EVENTS_PER_BATCH`), spread
fairly over the partitions that have a backlog. `SupportsTriggerAvailableNow`
pins the target offsets at the start of an `--available-now` run.

Two formats:
- `obs_raw_events`: the raw-events topic. `read()` parses each offset range
  once (`spark.staging`), stages bronze files and rejects, and yields the valid
  events' partial window aggregates (`spark.partials`, one row per window,
  service and endpoint of the range) to Spark as Arrow record batches.
- `obs_dead_letters`: the dead-letter topic (`observability.dead_letter`
  records published by producers) as dead_letter rows.
- `obs_logs`, `obs_otel_metrics`: the logs and metrics topics, each record
  validated once (`spark.otlp_records`) into a valid row or a reject.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pyarrow as pa
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow

from observability.columns import select, spark_ddl
from observability.memory import gc_paused, release_memory
from observability.schema import EVENT_COLUMNS

RAW_FORMAT = "obs_raw_events"
DEAD_LETTER_FORMAT = "obs_dead_letters"
RECORD_FORMATS = {"logs": "obs_logs", "otel_metrics": "obs_otel_metrics"}  # spark.otlp_records.STREAMS

# The event columns request metrics are computed from (kind and parent_span_id pick the entry
# spans, `spark.transforms.entry_spans`); the full rows go to bronze.
AGGREGATION_FIELDS = ("timestamp", "service", "endpoint", "status_code", "latency_ms", "kind", "parent_span_id")
_AGGREGATION_COLUMNS = select(EVENT_COLUMNS, AGGREGATION_FIELDS)
EVENT_SCHEMA = spark_ddl(_AGGREGATION_COLUMNS)
DEAD_LETTER_SCHEMA = "received_at_ms BIGINT, source STRING, reason STRING, payload STRING"
_YIELD_ROWS = 65_536


def transport_options(settings) -> dict[str, str]:
    """Options that let an executor rebuild the transport reader from settings."""
    return {
        "data_dir": str(settings.data_dir),
        "transport": settings.transport,
        "kafka_broker": settings.kafka_broker,
        "max_rows": str(settings.max_events_per_batch),
        "dedup_horizon": str(settings.dedup_horizon_events),
        "parse": settings.spark_parse,
    }


def open_reader(options: dict):
    from observability.settings import Settings
    from observability.transport import create_reader

    s = Settings(DATA_DIR=options["data_dir"], TRANSPORT=options["transport"], KAFKA_BROKER=options["kafka_broker"])
    return create_reader(s)


def plan_end(start: dict[str, int], latest: dict[str, int], max_rows: int | None) -> dict[str, int]:
    """End offsets for the next micro-batch: everything, or `max_rows` shared fairly."""
    end = dict(start)
    lag = {p: max(0, latest[p] - start.get(p, 0)) for p in latest}
    for p in latest:
        end.setdefault(p, 0)
    if max_rows is None or sum(lag.values()) <= max_rows:
        for p in latest:
            end[p] = max(start.get(p, 0), latest[p])
        return end
    alloc = {p: 0 for p in lag}
    active = sorted((p for p in lag if lag[p] > 0), key=int)
    remaining = max_rows
    while remaining > 0 and active:
        share = max(1, remaining // len(active))
        for p in list(active):
            take = min(share, lag[p] - alloc[p], remaining)
            alloc[p] += take
            remaining -= take
            if alloc[p] >= lag[p]:
                active.remove(p)
            if remaining == 0:
                break
    for p, n in alloc.items():
        end[p] = start.get(p, 0) + n
    return end


class RangePartition(InputPartition):
    """One partition's offset range [start, end) of a micro-batch."""

    def __init__(self, partition: int, start: int, end: int) -> None:
        super().__init__((partition, start, end))
        self.partition, self.start, self.end = partition, start, end


class _TopicStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Offset bookkeeping shared by both formats (runs in Spark's source process)."""

    def __init__(self, options: dict) -> None:
        self.options = dict(options)
        self.topic = options["topic"]
        self.max_rows = int(options.get("max_rows", 0)) or None
        self._target: dict[str, int] | None = None
        self._reader = None

    def __getstate__(self):  # the transport client stays in the planning process
        state = dict(self.__dict__)
        state["_reader"] = None
        return state

    def _transport(self):
        if self._reader is None:
            self._reader = open_reader(self.options)
        return self._reader

    def _latest(self) -> dict[str, int]:
        return {str(p): int(o) for p, o in self._transport().end_offsets(self.topic).items()}

    def initialOffset(self) -> dict:
        return {str(p): 0 for p in self._transport().partitions(self.topic)}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows) if self.max_rows else ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._latest()

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        latest = self._target if self._target is not None else self._latest()
        start = {str(p): int(o) for p, o in (start or {}).items()}
        cap = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        return plan_end(start, latest, cap)

    def reportLatestOffset(self):
        return self._latest()

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        out = []
        for p, e in sorted(end.items(), key=lambda kv: int(kv[0])):
            s = int(start.get(p, 0)) if start else 0
            if int(e) > s:
                out.append(RangePartition(int(p), s, int(e)))
        return out

    def commit(self, end: dict) -> None:
        pass

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def parse_range(options: dict, reader, topic: str, partition: int, start: int, end: int):
    """One offset range read and judged once: vectorised (`spark.vector_parse`) or line by line."""
    from spark.staging import parse_records

    if options.get("parse", "vector") == "per_line":
        return parse_records(topic, reader.read(topic, partition, start, end))
    from spark.vector_parse import VectorParsedRange

    offsets, timestamps, values = reader.read_values(topic, partition, start, end)
    return VectorParsedRange(topic, partition, offsets, timestamps, values, int(time.time() * 1000))


class RawEventsStreamReader(_TopicStreamReader):
    def read(self, partition: RangePartition) -> Iterator[pa.RecordBatch]:
        from spark.dedupe import seen_before
        from spark.staging import stage_range

        staging_dir, horizon = Path(self.options["staging_dir"]), int(self.options.get("dedup_horizon", 0))
        with gc_paused():  # the range's objects are acyclic and freed by refcounting (observability.memory)
            reader = open_reader(self.options)
            try:
                parser = parse_range(
                    self.options, reader, self.topic, partition.partition, partition.start, partition.end
                )
                seen = (
                    seen_before(reader, staging_dir, self.topic, partition.partition, partition.start, horizon)
                    if horizon
                    else None
                )
            finally:
                reader.close()
            _, valid = stage_range(
                self.topic,
                partition.partition,
                partition.start,
                partition.end,
                parser,
                Path(self.options["bronze_dir"]),
                staging_dir,
                seen,
                horizon,
            )
            partials = list(_partial_batches(valid)) if valid.num_rows else []
            del parser, seen, valid
        yield from partials
        release_memory(gc_generation=1)  # the range's parse is done: its pages go back before the next range


class DeadLetterStreamReader(_TopicStreamReader):
    def read(self, partition: RangePartition) -> Iterator[tuple]:
        from observability.dead_letter import parse_dead_letter

        reader = open_reader(self.options)
        try:
            for rec in reader.read(self.topic, partition.partition, partition.start, partition.end):
                yield dead_letter_row(rec, parse_dead_letter)
        finally:
            reader.close()


class RecordsStreamReader(_TopicStreamReader):
    """A logs or metrics topic: one Arrow table per range (valid rows and rejects)."""

    stream_name = ""

    def read(self, partition: RangePartition) -> Iterator[pa.RecordBatch]:
        from spark.otlp_records import STREAMS, parse_range

        reader = open_reader(self.options)
        try:
            records = reader.read(self.topic, partition.partition, partition.start, partition.end)
            table = parse_range(STREAMS[self.stream_name], self.topic, records)
        finally:
            reader.close()
        yield from table.to_batches(max_chunksize=_YIELD_ROWS)


def dead_letter_row(rec, parse) -> tuple:
    """One dead-letter topic record -> (received_at_ms, source, reason, payload).

    A record that is not in the dead-letter format is kept too, with a reason
    saying so: nothing is dropped silently.
    """
    try:
        d = parse(rec.value)
        ts = d["received_at"].replace(tzinfo=UTC)
        return (int(ts.timestamp() * 1000), str(d["source"]), str(d["reason"]), d["payload"])
    except Exception as exc:  # noqa: BLE001 - any malformed record becomes a dead letter itself
        from spark.staging import _payload_text

        when = rec.timestamp_ms if rec.timestamp_ms and rec.timestamp_ms > 0 else int(time.time() * 1000)
        return (
            when,
            f"spark:{rec.topic}:{rec.partition}:{rec.offset}",
            f"dead_letter: unreadable record ({type(exc).__name__}: {exc})"[:500],
            _payload_text(rec.value),
        )


class RawEventsDataSource(DataSource):
    """Options: topic, data_dir, transport, kafka_broker, max_rows, bronze_dir, staging_dir."""

    @classmethod
    def name(cls) -> str:
        return RAW_FORMAT

    def schema(self) -> str:
        from spark.partials import PARTIAL_SCHEMA

        return PARTIAL_SCHEMA

    def streamReader(self, schema) -> DataSourceStreamReader:
        return RawEventsStreamReader(self.options)


class DeadLetterDataSource(DataSource):
    """Options: topic, data_dir, transport, kafka_broker, max_rows."""

    @classmethod
    def name(cls) -> str:
        return DEAD_LETTER_FORMAT

    def schema(self) -> str:
        return DEAD_LETTER_SCHEMA

    def streamReader(self, schema) -> DataSourceStreamReader:
        return DeadLetterStreamReader(self.options)


class _RecordsDataSource(DataSource):
    """A logs or metrics topic (options as DeadLetterDataSource); subclasses name the stream."""

    stream_name = ""
    reader_class: type[RecordsStreamReader] = RecordsStreamReader

    @classmethod
    def name(cls) -> str:
        return RECORD_FORMATS[cls.stream_name]

    def schema(self) -> str:
        from spark.otlp_records import STREAMS

        return STREAMS[self.stream_name].spark_schema()

    def streamReader(self, schema) -> DataSourceStreamReader:
        return self.reader_class(self.options)


class LogsStreamReader(RecordsStreamReader):
    stream_name = "logs"


class OtelMetricsStreamReader(RecordsStreamReader):
    stream_name = "otel_metrics"


class LogsDataSource(_RecordsDataSource):
    stream_name = "logs"
    reader_class = LogsStreamReader


class OtelMetricsDataSource(_RecordsDataSource):
    stream_name = "otel_metrics"
    reader_class = OtelMetricsStreamReader


def register(spark) -> None:
    spark.dataSource.register(RawEventsDataSource)
    spark.dataSource.register(DeadLetterDataSource)
    spark.dataSource.register(LogsDataSource)
    spark.dataSource.register(OtelMetricsDataSource)


def native_kafka_events(spark, settings, options: dict):
    """SPARK_SOURCE=native: Spark's own Kafka connector, same parse and staging.

    Needs the spark-sql-kafka-0-10 jars on the classpath (e.g. a container
    image built with internet access); not available, hence untested, here.
    Offsets then live in the checkpoint in the connector's own format.
    """
    from pyspark.sql import functions as F

    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_broker)
        .option("subscribe", options["topic"])
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "false")
        .option("maxOffsetsPerTrigger", options["max_rows"])
        .load()
    )
    cols = raw.select("partition", "offset", F.unix_millis("timestamp").alias("timestamp_ms"), "key", "value")
    from spark.partials import PARTIAL_SCHEMA

    return cols.mapInArrow(_NativeStager(options), PARTIAL_SCHEMA)


class _NativeStager:
    """mapInArrow function: group a Spark partition's Kafka records by partition, parse, stage."""

    def __init__(self, options: dict) -> None:
        self.options = dict(options)

    def __call__(self, batches):
        from observability.transport.base import Record
        from spark.dedupe import seen_before
        from spark.staging import parse_records, stage_range

        topic = self.options["topic"]
        by_partition: dict[int, list[Record]] = {}
        for batch in batches:
            d = batch.to_pydict()
            for p, o, ts, k, v in zip(
                d["partition"], d["offset"], d["timestamp_ms"], d["key"], d["value"], strict=True
            ):
                by_partition.setdefault(p, []).append(Record(topic, p, o, ts, k, v))
        for p, records in sorted(by_partition.items()):
            records.sort(key=lambda r: r.offset)
            parser = parse_records(topic, records)
            staging_dir, horizon = Path(self.options["staging_dir"]), int(self.options.get("dedup_horizon", 0))
            seen = None
            if horizon:
                reader = open_reader(self.options)
                try:
                    seen = seen_before(reader, staging_dir, topic, p, records[0].offset, horizon)
                finally:
                    reader.close()
            _, valid = stage_range(
                topic,
                p,
                records[0].offset,
                records[-1].offset + 1,
                parser,
                Path(self.options["bronze_dir"]),
                staging_dir,
                seen,
                horizon,
            )
            if valid.num_rows:
                yield from _partial_batches(valid)


def _partial_batches(valid: pa.Table) -> Iterator[pa.RecordBatch]:
    """The partial window aggregates of staged bronze rows, as Spark's Arrow input wants them."""
    from spark.partials import window_partials

    yield from window_partials(valid).to_batches(max_chunksize=_YIELD_ROWS)
