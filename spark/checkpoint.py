"""What the sink reads from Spark's checkpoint: the query's id and each batch's watermark.

Spark's offset log (`<checkpoint>/offsets/<batch>`) records, before a batch
runs, the event-time watermark it uses (`batchWatermarkMs`). Spark 4 drops a
row in batch N when its window ended at or before batch N-1's watermark and
evicts windows ending at or before batch N's, so the sink counts late rows
against the former and reports the latter as "windows up to here are final".
The format is Spark's persistent (backward compatible) checkpoint format:
a version line, a metadata JSON line, then one line per source.
"""

from __future__ import annotations

import json
from pathlib import Path


def query_id(checkpoint: Path) -> str | None:
    """The query's id, stable for the life of its checkpoint (`<checkpoint>/metadata`)."""
    path = Path(checkpoint) / "metadata"
    try:
        return json.loads(path.read_text().splitlines()[0])["id"]
    except (FileNotFoundError, IndexError, KeyError, ValueError):
        return None


def batch_watermark_ms(checkpoint: Path, batch_id: int) -> int:
    """The watermark batch `batch_id` ran with (0 before the first batch or when unknown)."""
    if batch_id < 0:
        return 0
    path = Path(checkpoint) / "offsets" / str(batch_id)
    try:
        lines = path.read_text().splitlines()
        return int(json.loads(lines[1]).get("batchWatermarkMs", 0))
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def committed_offsets(checkpoint: Path) -> int:
    """Records the query has committed: the end offsets of its last committed batch, summed.

    Spark writes `<checkpoint>/commits/<batch>` once batch `batch` is done; the
    batch's offset-log entry holds, on its third line, the source's end offset
    (our sources: `{"partition": offset}`; Kafka's: `{"topic": {"partition":
    offset}}`). 0 before the first commit or when the log is unreadable."""
    commits = Path(checkpoint) / "commits"
    if not commits.is_dir():
        return 0
    ids = sorted(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    if not ids:
        return 0
    try:
        lines = (Path(checkpoint) / "offsets" / str(ids[-1])).read_text().splitlines()
        return _sum_offsets(json.loads(lines[2]))
    except (FileNotFoundError, IndexError, TypeError, ValueError):
        return 0


def _sum_offsets(offsets) -> int:
    if isinstance(offsets, dict):
        return sum(_sum_offsets(v) for v in offsets.values())
    return int(offsets)
