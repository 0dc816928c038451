"""The final flush of a bounded run (`--available-now`): the input has ended, so its windows are final.

A stream's watermark trails its newest event by WATERMARK_SECONDS: after a
replay or a backfill the last minute or two would stay open, and the detector,
which scores only windows ending at or before the watermark, would never score
them (a replay would miss its final fault). Once an `--available-now` run has
processed everything, nothing later can come from that input, so the last
committed batch's watermark moves on to the end of the minute of the input's
last request: its latest root span (no parent) in bronze. The minute after it
holds only the child spans of its last traces, a partial window that would read
as a traffic drop, so it stays open. Events without trace structure are all
roots: every window is then final.

Spark's own state keeps its watermark, so rows of a flushed window that arrive
in a later run still refine it (`--no-final-flush` keeps the window open for an
incremental load that will continue).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from observability import bronze, tables
from observability.logs import get_logger
from observability.settings import Settings
from observability.store import Store

log = get_logger(__name__)
MINUTE = timedelta(minutes=1)
ROOT_LOOKBACK = timedelta(hours=1)  # how far before the last event the last root span is looked for


def last_request(bronze_root, last_event: datetime) -> datetime:
    """Timestamp of the latest root span at or before `last_event` (else `last_event` itself)."""
    dirs = bronze.partition_dirs(bronze_root, last_event - ROOT_LOOKBACK, last_event)
    if not dirs:
        return last_event
    con = duckdb.connect(":memory:")
    try:
        row = con.execute(
            "SELECT max(timestamp) FROM read_parquet(?, union_by_name=true) "
            "WHERE parent_span_id IS NULL AND timestamp >= ? AND timestamp <= ?",
            [[str(d / "*.parquet") for d in dirs], last_event - ROOT_LOOKBACK, last_event],
        ).fetchone()
    finally:
        con.close()
    return row[0] if row and row[0] is not None else last_event


def flush(store: Store, settings: Settings) -> datetime | None:
    """Advance the stream's watermark to the end of the input's last request minute; returns it
    (None when there is nothing to flush: no batch yet, or the watermark is already there)."""
    last = store.fetch_one(
        f"SELECT batch_id, watermark, max_event_time FROM {tables.STREAM_PROGRESS} ORDER BY batch_id DESC LIMIT 1"
    )
    top = store.fetch_one(f"SELECT max(watermark), max(max_event_time) FROM {tables.STREAM_PROGRESS}")
    if last is None or top is None or top[1] is None:
        return None
    batch_id, current, last_event = last[0], top[0], top[1]
    request = last_request(settings.bronze_dir, last_event)
    target = datetime(request.year, request.month, request.day, request.hour, request.minute) + MINUTE
    newest = store.fetch_one(f"SELECT max(window_end) FROM {tables.SERVICE_METRICS}")
    if newest and newest[0] is not None:
        target = min(target, newest[0])
    if current is not None and target <= current:
        return None
    store.execute(f"UPDATE {tables.STREAM_PROGRESS} SET watermark = ? WHERE batch_id = ?", [target, batch_id])
    log.info("final flush: the input has ended", watermark=str(target), was=str(current), batch_id=batch_id)
    return target
