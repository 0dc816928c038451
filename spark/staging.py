"""Parse one offset range once; stage its bronze files, rejects and a manifest.

The source's `read()` parses a partition's offset range with the shared
`validate_line` (so Spark judges a line exactly as the producers do) and, before
handing the valid rows to Spark's window aggregation, writes:

- the valid events as bronze Parquet under `date=YYYY-MM-DD/hour=HH/`, one file
  per (range, hour) named by the offset range, so a replayed range overwrites
  the same files with the same rows (idempotent, no duplicates);
- the rejected lines (with reasons) as a small Parquet file;
- a manifest naming both, written last and atomically.

The manifest also carries the range's side outputs (`spark.side_outputs`:
trace sample candidates, call edges, rows per window). The sink
(`foreachBatch`) reads the manifests of the micro-batch and writes its
per-batch outputs (dead letters, trace samples, dependency edges, late rows)
from that one parse.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from observability.bronze import BRONZE_COLUMNS, BRONZE_DICTIONARY_COLUMNS
from observability.columns import arrow_schema
from observability.dead_letter import MAX_PAYLOAD_CHARS
from observability.schema import (
    EVENT_COLUMNS,
    MAX_LINE_BYTES,
    Event,
    InvalidEvent,
    decode_line,
    validate_event,
    validate_line,
)
from observability.transport.base import Record

BRONZE_SCHEMA = arrow_schema(EVENT_COLUMNS)  # timestamp[ms], UTC wall time; attributes JSON text

REJECT_SCHEMA = pa.schema(
    [
        ("received_at_ms", pa.int64()),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("payload", pa.string()),
    ]
)

_CHUNK = 20_000


@dataclass(frozen=True)
class StagedRange:
    """What the source staged for one (topic, partition, start, end) range."""

    topic: str
    partition: int
    start: int
    end: int
    valid: int
    rejected: int
    max_event_ms: int | None
    bronze_files: list[str]
    rejects_file: str | None
    samples: list[list]  # trace sample candidates (spark.side_outputs.SAMPLE_COLUMNS)
    edges: list[list]  # call edges (EDGE_COLUMNS)
    window_counts: list[list]  # valid rows per window (WINDOW_COUNT_COLUMNS)
    duplicates: int = 0  # valid events dropped as repeats of an earlier event_id (spark.dedupe)
    traces: pa.Table | None = None  # per-trace partial rows (spark.trace_index), in the process that staged them
    traces_file: str | None = None  # the same rows as an Arrow IPC file beside the manifest

    @property
    def name(self) -> str:
        return range_name(self.topic, self.partition, self.start, self.end)


def range_name(topic: str, partition: int, start: int, end: int) -> str:
    return f"{topic}-p{partition}-{start:012d}-{end:012d}"


def _payload_text(value: bytes) -> str:
    text = value.decode("utf-8", errors="backslashreplace")
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"...[truncated, {len(text)} chars]"
    return text


def validate_fast(raw: bytes, now_ms: int) -> tuple[Event, dict]:
    """`validate_line`'s verdict, faster: orjson decodes, `validate_event` judges.

    Whatever orjson cannot decode, and every rejected line, goes through
    `validate_line` itself, so accept/reject and the reason are the shared
    implementation's (orjson refuses NaN, lone surrogates and 1e400, which
    the json module lets through to the field checks). Returns the event and
    the decoded object.
    """
    if len(raw) <= MAX_LINE_BYTES:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            try:
                return validate_event(obj, now_ms=now_ms), obj
            except InvalidEvent:
                pass
    event = validate_line(raw, now_ms=now_ms)
    return _storable(event), decode_line(raw)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(event: Event) -> Event:
    """Lone surrogates (valid JSON escapes) cannot be stored as UTF-8: replace them with U+FFFD."""
    fixed = {}
    for name in ("service", "endpoint", "error_message"):
        value = getattr(event, name)
        if isinstance(value, str):
            clean = _SURROGATE.sub("\ufffd", value)
            if clean != value:
                fixed[name] = clean
    return replace(event, **fixed) if fixed else event


def derived_event_id(topic: str, partition: int, offset: int) -> str:
    """An event without an event_id gets one from its position, the same on every replay."""
    return hashlib.md5(f"{topic}:{partition}:{offset}".encode()).hexdigest()


def _attributes_json(attributes: dict) -> str:
    try:
        return orjson.dumps(attributes).decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. lone surrogates or huge ints: ASCII escapes
        return json.dumps(attributes, separators=(",", ":"))


# An event's values in bronze column order (timestamp as epoch ms, attributes still a dict).
_EVENT_ATTRS = operator.attrgetter(*("timestamp_ms" if f == "timestamp" else f for f in BRONZE_COLUMNS))
_EVENT_ID, _ATTRIBUTES = BRONZE_COLUMNS.index("event_id"), BRONZE_COLUMNS.index("attributes")


def _bronze_values(ev: Event) -> list:
    row = list(_EVENT_ATTRS(ev))
    row[_ATTRIBUTES] = None
    return row


class RangeParser:
    """Accumulates validated events column-wise (Arrow chunks) and rejects."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._chunks: list[pa.Table] = []
        self._cols: list[list] = [[] for _ in BRONZE_COLUMNS]
        self._offsets: list[int] = []  # of the valid rows, in order (spark.dedupe's horizon)
        self.rejects: list[tuple[int, str, str, str]] = []

    def add(self, rec: Record, wall_ms: int) -> None:
        # The record's publish time is "now" for the future-timestamp rule, so a
        # replayed range is judged exactly as it was the first time.
        now_ms = rec.timestamp_ms if rec.timestamp_ms and rec.timestamp_ms > 0 else wall_ms
        try:
            ev, obj = validate_fast(rec.value, now_ms)
        except InvalidEvent as exc:
            self.rejects.append(
                (now_ms, f"spark:{self.topic}:{rec.partition}:{rec.offset}", str(exc), _payload_text(rec.value))
            )
            return
        self._offsets.append(rec.offset)
        row = _bronze_values(ev)
        if obj.get("event_id") is None:
            row[_EVENT_ID] = derived_event_id(self.topic, rec.partition, rec.offset)
        if ev.attributes is not None:
            row[_ATTRIBUTES] = _attributes_json(ev.attributes)
        c = self._cols
        for col, value in zip(c, row, strict=True):
            col.append(value)
        if len(c[0]) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._cols[0]:
            return
        arrays = []
        for col, field in zip(self._cols, BRONZE_SCHEMA, strict=True):
            if field.name == "timestamp":
                arrays.append(pa.array(col, pa.int64()).cast(field.type))
            else:
                arrays.append(pa.array(col, field.type))
        self._chunks.append(pa.Table.from_arrays(arrays, schema=BRONZE_SCHEMA))
        self._cols = [[] for _ in BRONZE_COLUMNS]

    def valid_table(self) -> pa.Table:
        self._flush()
        if not self._chunks:
            return BRONZE_SCHEMA.empty_table()
        return pa.concat_tables(self._chunks).combine_chunks()

    def valid_offsets(self) -> pa.Array:
        return pa.array(self._offsets, pa.int64())

    def rejects_table(self) -> pa.Table:
        cols = list(zip(*self.rejects, strict=True)) if self.rejects else [[], [], [], []]
        return pa.Table.from_arrays(
            [pa.array(list(c), f.type) for c, f in zip(cols, REJECT_SCHEMA, strict=True)], schema=REJECT_SCHEMA
        )


def parse_records(topic: str, records: Iterable[Record]) -> RangeParser:
    parser = RangeParser(topic)
    wall_ms = int(time.time() * 1000)
    for rec in records:
        parser.add(rec, wall_ms)
    return parser


def _atomic_write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    dictionary = [c for c in BRONZE_DICTIONARY_COLUMNS if c in table.column_names]
    pq.write_table(table, tmp, compression="snappy", use_dictionary=dictionary)
    os.replace(tmp, path)


def _manifest_json(manifest: dict) -> str:
    """orjson (~6x faster); the standard library for what orjson refuses (an integer over 64 bits)."""
    try:
        return orjson.dumps(manifest).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(manifest)


def _atomic_write_ipc(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def stage_range(
    topic: str,
    partition: int,
    start: int,
    end: int,
    parser: RangeParser,
    bronze_dir: Path,
    staging_dir: Path,
    seen: pa.Array | None = None,
    horizon: int = 0,
) -> tuple[StagedRange, pa.Table]:
    """Write the range's bronze files, rejects and manifest; return it and the valid rows.

    With a `horizon` (> 0), valid events whose event_id is in `seen` or earlier
    in the range are dropped first (`spark.dedupe`), and the range's ids are saved."""
    from spark import dedupe, side_outputs

    valid = parser.valid_table()
    duplicates = 0
    if horizon > 0:
        dedupe.save_ids(
            dedupe.ids_dir(staging_dir),
            topic,
            partition,
            start,
            end,
            parser.valid_offsets(),
            valid.column("event_id").combine_chunks(),
            horizon,
        )
        valid, duplicates = dedupe.drop_duplicates(valid, seen if seen is not None else pa.array([], pa.string()))
    name = range_name(topic, partition, start, end)
    bronze_files: list[str] = []
    max_event_ms = None
    if valid.num_rows:
        ts_ms = valid.column("timestamp").cast(pa.int64())
        max_event_ms = int(pc.max(ts_ms).as_py())
        hours = pc.divide(ts_ms, 3_600_000)  # integer division: epoch hour
        for hour in pc.unique(hours).to_pylist():
            part = valid.filter(pc.equal(hours, hour))
            t = datetime.fromtimestamp(hour * 3600, tz=UTC)
            path = Path(bronze_dir) / f"date={t:%Y-%m-%d}" / f"hour={t:%H}" / f"part-{name}.parquet"
            _atomic_write_parquet(part, path)
            bronze_files.append(str(path))
    rejects_file = None
    if parser.rejects:
        path = Path(staging_dir) / f"{name}.rejects.parquet"
        _atomic_write_parquet(parser.rejects_table(), path)
        rejects_file = str(path)
    side = side_outputs.compute(valid)
    traces_file = None
    if side["traces"] is not None and side["traces"].num_rows:
        path = Path(staging_dir) / f"{name}.traces.arrow"
        _atomic_write_ipc(side["traces"], path)
        traces_file = str(path)
    staged = StagedRange(
        topic,
        partition,
        start,
        end,
        valid.num_rows,
        len(parser.rejects),
        max_event_ms,
        sorted(bronze_files),
        rejects_file,
        side["samples"],
        side["edges"],
        side["window_counts"],
        duplicates,
        traces=side["traces"],
        traces_file=traces_file,
    )
    manifest = {k: v for k, v in staged.__dict__.items() if k != "traces"}  # the rows are in traces_file
    _atomic_write_text(_manifest_json(manifest), Path(staging_dir) / f"{name}.json")
    return staged, valid


def load_manifests(staging_dir: Path) -> list[StagedRange]:
    """Manifests present now: exactly the ranges of the micro-batch being committed."""
    d = Path(staging_dir)
    if not d.is_dir():
        return []
    return [StagedRange(**orjson.loads(p.read_bytes())) for p in sorted(d.glob("*.json"))]


def clear_manifests(staging_dir: Path, staged: list[StagedRange]) -> None:
    """After the batch's DuckDB commit: drop its manifests and reject files."""
    for s in staged:
        for staged_file in (s.rejects_file, s.traces_file):
            if staged_file:
                Path(staged_file).unlink(missing_ok=True)
        (Path(staging_dir) / f"{s.name}.json").unlink(missing_ok=True)


def read_rejects(staged: list[StagedRange]) -> pa.Table:
    files = [s.rejects_file for s in staged if s.rejects_file]
    if not files:
        return REJECT_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=REJECT_SCHEMA) for f in files])
