"""De-duplication by `event_id` in the source, over a bounded horizon per partition.

Why: a producer that does not see a batch's acknowledgement (a timeout, a
dropped connection, an fsync error after the write) retries it, and the
broker or log then holds the batch twice. Counting both would double a
window's counts. Producers key events by trace id, so a retried batch lands
in the same partition, a little later. The source therefore drops a valid
event whose `event_id` already occurred in the same partition within the
`horizon` offsets before it (`DEDUP_HORIZON_EVENTS`, per partition), before
anything is staged, aggregated or sampled: bronze, trace samples, call edges
and window counts all see each event once.

The rule is a function of the log alone, so a replayed range gives the same
answer: for a range [start, end) the "seen" set is the event ids of the valid
events at offsets [start - horizon, start). Each range saves the ids of its
last `horizon` valid events (`<range>.arrow` under the staging directory's
`event_ids/`) for the ranges after it; when those files do not cover the
horizon (first run, a wiped staging directory, a larger horizon), it is read
back from the log instead. A duplicate further back than the horizon is not
recognised. Events without an `event_id` get one from their offset, so they
are never taken for duplicates.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IDS_SCHEMA = pa.schema([("offset", pa.int64()), ("event_id", pa.string())])
_NAME = re.compile(r"^(?P<topic>.+)-p(?P<partition>\d+)-(?P<start>\d{12})-(?P<end>\d{12})\.arrow$")


def drop_duplicates(valid: pa.Table, seen: pa.Array) -> tuple[pa.Table, int]:
    """Keep each event id's first occurrence in the range, unless `seen` holds it; returns (kept, dropped).

    One vectorised hash lookup (Arrow's index_in over `seen` followed by the
    range itself): an event is kept when the first place its id occurs is
    its own position, i.e. neither in `seen` nor earlier in the range."""
    n = valid.num_rows
    if n == 0:
        return valid, 0
    ids = valid.column("event_id").combine_chunks()
    first = pc.index_in(ids, value_set=pa.concat_arrays([seen.cast(ids.type), ids])).to_numpy(zero_copy_only=False)
    keep = first == np.arange(len(seen), len(seen) + n)
    if keep.all():
        return valid, 0
    return valid.filter(pa.array(keep)), int(n - keep.sum())


def ids_dir(staging_dir: Path) -> Path:
    return Path(staging_dir) / "event_ids"


def _files(directory: Path, topic: str, partition: int) -> list[tuple[int, int, Path]]:
    out = []
    if directory.is_dir():
        for path in directory.glob(f"{topic}-p{partition}-*.arrow"):
            m = _NAME.match(path.name)
            if m and m["topic"] == topic and int(m["partition"]) == partition:
                out.append((int(m["start"]), int(m["end"]), path))
    return sorted(out)


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def seen_from_files(directory: Path, topic: str, partition: int, start: int, horizon: int) -> pa.Array | None:
    """Event ids of valid events at [start - horizon, start) from saved files; None when they do not cover it."""
    lo = max(0, start - horizon)
    if lo >= start:
        return pa.array([], pa.string())
    tables, covered = [], []
    for f_start, f_end, path in _files(directory, topic, partition):
        if f_end <= lo or f_start >= start:
            continue
        t = _read(path)
        # a file holds the events of its range's last `horizon` offsets: it covers [kept_from, end)
        covered.append((int(t.schema.metadata[b"kept_from"]), f_end))
        tables.append(t.replace_schema_metadata(None))
    reach = lo
    for a, b in sorted(covered):
        if a > reach:
            break
        reach = max(reach, b)
    if reach < start:
        return None
    ids = pa.concat_tables(tables) if tables else IDS_SCHEMA.empty_table()
    offsets = ids.column("offset")
    mask = pc.and_(pc.greater_equal(offsets, lo), pc.less(offsets, start))
    return ids.filter(mask).column("event_id").combine_chunks()


def save_ids(
    directory: Path, topic: str, partition: int, start: int, end: int, offsets: pa.Array, ids: pa.Array, horizon: int
) -> None:
    """Save the range's last `horizon` (offset, event_id) pairs; drop files no later range needs."""
    from spark.staging import range_name

    directory.mkdir(parents=True, exist_ok=True)
    kept_from = max(start, end - horizon)
    first = int(np.searchsorted(offsets.to_numpy(zero_copy_only=False), kept_from))  # offsets ascend
    table = pa.table({"offset": offsets[first:], "event_id": ids[first:]}, schema=IDS_SCHEMA)
    table = table.replace_schema_metadata({"kept_from": str(kept_from)})
    path = directory / f"{range_name(topic, partition, start, end)}.arrow"
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)
    for _start, f_end, old in _files(directory, topic, partition):
        if f_end <= start - horizon:  # below every later range's horizon (and this one's)
            old.unlink(missing_ok=True)


def seen_from_log(reader, topic: str, partition: int, start: int, horizon: int) -> pa.Array:
    """The same ids, read back from the log: the records at [start - horizon, start), parsed as the source does."""
    from spark.staging import parse_records

    lo = max(0, start - horizon)
    if lo >= start:
        return pa.array([], pa.string())
    parser = parse_records(topic, reader.read(topic, partition, lo, start))
    return parser.valid_table().column("event_id").combine_chunks()


def seen_before(reader, staging_dir: Path, topic: str, partition: int, start: int, horizon: int) -> pa.Array:
    """Event ids of the valid events in the `horizon` offsets before `start` (saved files, else the log)."""
    seen = seen_from_files(ids_dir(staging_dir), topic, partition, start, horizon)
    if seen is None:
        from observability.logs import get_logger

        get_logger(__name__).info(
            "dedupe: horizon read back from the log", topic=topic, partition=partition, start=start, horizon=horizon
        )
        seen = seen_from_log(reader, topic, partition, start, horizon)
    return seen
