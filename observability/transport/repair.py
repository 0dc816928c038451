"""`python -m observability.transport.repair`: check the local log and quarantine corrupt records.

A record whose CRC fails with valid records after it is corruption (a flipped
byte on disk), not a torn tail, so the log refuses to read or append past it
(`LogCorruption`). This tool, run while producers and the Spark job are
stopped or not, takes each such record out:

- its bytes are copied to `<partition>/quarantine/<segment>-<byte>.corrupt` (fsync'd),
- in the segment it is replaced by a marker record at the same offset (key
  `__quarantined__`, a JSON value naming the quarantine file), so every later
  offset still holds its own record and consumers' checkpoints stay valid;
  the Spark job sends the marker to the dead-letter table,
- the segment is rewritten through a temporary file and an atomic rename,
  and its sparse index is rebuilt.

Without `--apply` it only reports what it would do (exit 1 when corruption is found).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from pathlib import Path

from observability.transport.local_log import (
    _HDR,
    _IDX,
    INDEX_INTERVAL,
    QUARANTINED_KEY,
    LogCorruption,
    _Partition,
    _valid_record_at,
    encode_record,
    next_valid_record,
    topic_partitions,
)


def check_partition(part: _Partition) -> LogCorruption | None:
    """The first corruption in a partition, or None when every segment reads to its end."""
    try:
        for base in part.segments():
            for _ in part.scan(base):
                pass
    except LogCorruption as exc:
        return exc
    return None


def _records_between(data: bytes, start: int, stop: int) -> int:
    n, pos = 0, start
    while pos < stop:
        size = _valid_record_at(data, pos)
        if size is None:
            break
        pos += size
        n += 1
    return n


def _bad_record_count(part: _Partition, base: int, data: bytes, pos: int, resume: int | None, offset: int) -> int:
    """How many offsets the bad bytes [pos, resume) held.

    Exact when the bad record's length field is intact (one record) or when an
    index entry, or the next segment's base offset, lies after `resume`;
    otherwise the least possible, one.
    """
    length, _ = _HDR.unpack_from(data, pos) if len(data) - pos >= _HDR.size else (0, 0)
    if resume is not None and pos + _HDR.size + length == resume:
        return 1
    if resume is not None:
        for idx_off, idx_pos in part.load_index(base, len(data)):
            if idx_pos >= resume:
                return max(1, idx_off - _records_between(data, resume, idx_pos) - offset)
    later = [b for b in part.segments() if b > base]
    if later:
        after = _records_between(data, resume, len(data)) if resume is not None else 0
        return max(1, later[0] - after - offset)
    return 1


def repair_at(part: _Partition, corruption: LogCorruption) -> Path:
    """Quarantine the bad bytes at `corruption`; returns the quarantine file."""
    seg, pos, offset = corruption.path, corruption.position, corruption.offset
    base = int(seg.stem)
    with open(part.dir / ".lock", "a+b") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        try:
            data = seg.read_bytes()
            resume = next_valid_record(data, pos + 1)
            stop = len(data) if resume is None else resume
            count = _bad_record_count(part, base, data, pos, resume, offset)
            kept = part.quarantine(f"{base:020d}-{pos}.corrupt", data[pos:stop])
            markers = b"".join(
                encode_record(
                    0,
                    QUARANTINED_KEY,
                    json.dumps(
                        {"quarantined_record": {"file": str(kept), "offset": offset + i, "reason": str(corruption)}}
                    ).encode(),
                )
                for i in range(count)
            )
            _replace_file(seg, data[:pos] + markers + data[stop:])
            _rebuild_index(part, base)
        finally:
            fcntl.flock(lockf, fcntl.LOCK_UN)
    return kept


def _replace_file(path: Path, content: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".repair")
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _rebuild_index(part: _Partition, base: int) -> None:
    entries = b"".join(_IDX.pack(off, pos) for off, pos, _ in part.scan(base) if off % INDEX_INTERVAL == 0)
    _replace_file(part.seg_path(base, "idx"), entries)


def repair_partition(part: _Partition, apply: bool, out=sys.stdout) -> int:
    """Report (and with `apply`, quarantine) every corruption; returns how many were found."""
    found = 0
    while (corruption := check_partition(part)) is not None:
        found += 1
        print(f"corrupt: {corruption.path} byte {corruption.position} offset {corruption.offset}", file=out)
        if not apply:
            break  # later corruption cannot be seen past this one without rewriting it
        print(f"  quarantined to {repair_at(part, corruption)}", file=out)
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m observability.transport.repair",
        description="Check the local log (TRANSPORT=local) for corrupt records and quarantine them.",
    )
    p.add_argument("log_dir", nargs="?", type=Path, default=None, help="the log directory (default: $DATA_DIR/log)")
    p.add_argument("--topic", action="append", default=None, help="only this topic (repeatable)")
    p.add_argument("--partition", type=int, action="append", default=None, help="only this partition (repeatable)")
    p.add_argument("--apply", action="store_true", help="quarantine what is found (default: report only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_dir is None:
        from observability.settings import get_settings

        args.log_dir = get_settings().log_dir
    topics = args.topic or sorted(d.name for d in args.log_dir.iterdir() if (d / "meta.json").exists())
    found = 0
    for topic in topics:
        for p in args.partition or range(topic_partitions(args.log_dir, topic)):
            found += repair_partition(_Partition(args.log_dir / topic / str(p)), args.apply)
    print(f"repair summary: corrupt={found} applied={'yes' if args.apply else 'no'}")
    return 1 if found and not args.apply else 0


if __name__ == "__main__":
    sys.exit(main())
