"""The embedded durable log: the `local` transport.

It keeps Kafka's model so the Spark source and tools treat both backends
alike: a topic has partitions, a partition is an append-only sequence of
records addressed by offset, each record has a key, a value and a timestamp.
It exists because no Kafka broker runs where containers cannot; compose runs
real Kafka.

On disk, under `<root>/<topic>/`:
  meta.json                      {"partitions": N}
  <p>/<base offset>.log          records: u32 body length, u32 crc32(body), body
  <p>/<base offset>.idx          sparse index: (u64 offset, u64 byte position)
  <p>/.lock                      flock'd by a writer for each append
Body: i64 timestamp ms, i32 key length (-1 = none), key, value.

Crash safety: a writer that is killed mid-append leaves a torn last record.
Readers stop at the first incomplete or corrupt record, so it is never read as
data, and the next writer to open the partition cuts it off (under the lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from observability.logs import get_logger
from observability.transport.base import Producer, Record, TopicReader, partition_for

log = get_logger(__name__)

_HDR = struct.Struct(">II")
_BODY = struct.Struct(">qi")
_IDX = struct.Struct(">QQ")
INDEX_INTERVAL = 256
SEGMENT_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 4 * 1024 * 1024


class LogCorruption(RuntimeError):
    pass


def encode_record(timestamp_ms: int, key: bytes | None, value: bytes) -> bytes:
    body = _BODY.pack(timestamp_ms, -1 if key is None else len(key)) + (key or b"") + value
    return _HDR.pack(len(body), zlib.crc32(body)) + body


def ensure_topic(root: Path, topic: str, partitions: int) -> int:
    """Create a topic if missing; returns its partition count (existing wins)."""
    tdir = Path(root) / topic
    meta = tdir / "meta.json"
    if meta.exists():
        return json.loads(meta.read_text())["partitions"]
    tdir.mkdir(parents=True, exist_ok=True)
    for p in range(partitions):
        (tdir / str(p)).mkdir(exist_ok=True)
    tmp = tdir / f".meta.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"partitions": partitions}))
    try:
        os.link(tmp, meta)  # atomic create-if-absent: concurrent creators agree
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return json.loads(meta.read_text())["partitions"]


def topic_partitions(root: Path, topic: str) -> int:
    meta = Path(root) / topic / "meta.json"
    if not meta.exists():
        return 0
    return json.loads(meta.read_text())["partitions"]


class _Partition:
    """Segment files of one partition."""

    def __init__(self, pdir: Path) -> None:
        self.dir = pdir

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.log"))

    def seg_path(self, base: int, ext: str = "log") -> Path:
        return self.dir / f"{base:020d}.{ext}"

    def load_index(self, base: int, data_size: int | None = None) -> list[tuple[int, int]]:
        path = self.seg_path(base, "idx")
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        n = len(raw) // _IDX.size
        entries = [_IDX.unpack_from(raw, i * _IDX.size) for i in range(n)]
        if data_size is not None:
            entries = [e for e in entries if e[1] < data_size]
        return entries

    def scan(self, base: int, start_offset: int = -1, stop_offset: int | None = None):
        """Walk valid records of a segment: yields (offset, pos, body) from the
        nearest indexed position at or before start_offset; stops at the first
        incomplete/corrupt record or at stop_offset."""
        path = self.seg_path(base)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            offset, pos = base, 0
            for idx_off, idx_pos in self.load_index(base, size):
                if idx_off <= start_offset:
                    offset, pos = idx_off, idx_pos
                else:
                    break
            f.seek(pos)
            buf = b""
            buf_start = pos
            while True:
                if stop_offset is not None and offset >= stop_offset:
                    return
                rel = pos - buf_start
                if len(buf) - rel < _HDR.size:
                    buf = buf[rel:] + f.read(_READ_CHUNK)
                    buf_start = pos
                    rel = 0
                    if len(buf) < _HDR.size:
                        return
                length, crc = _HDR.unpack_from(buf, rel)
                end = rel + _HDR.size + length
                if end > len(buf):
                    more = f.read(max(_READ_CHUNK, end - len(buf)))
                    buf = buf[rel:] + more
                    buf_start = pos
                    rel = 0
                    end = _HDR.size + length
                    if end > len(buf):
                        return  # incomplete tail (being written, or torn)
                body = buf[rel + _HDR.size : end]
                if length < _BODY.size or zlib.crc32(body) != crc:
                    return  # torn or corrupt: never read as data
                yield offset, pos, body
                pos += _HDR.size + length
                offset += 1

    def end(self) -> tuple[int, int, int]:
        """(next offset, base of the active segment, valid byte length of it)."""
        segs = self.segments()
        if not segs:
            return 0, 0, 0
        base = segs[-1]
        offset, pos = base, 0
        for entries in [self.load_index(base, os.path.getsize(self.seg_path(base)))]:
            if entries:
                offset, pos = entries[-1]
        last_off, last_end = offset, pos
        for off, p, body in self.scan(base, start_offset=offset):
            last_off, last_end = off + 1, p + _HDR.size + len(body)
        return last_off, base, last_end


class LocalLogProducer(Producer):
    """Appends records to the embedded log, batching per partition.

    fsync: "always" after every append, "batch" on flush() (default), "never".
    Buffered records are written when a partition's buffer passes
    `batch_bytes`, when the oldest waited `linger_ms`, or on flush().
    """

    def __init__(
        self,
        root: str | Path,
        *,
        partitions: int = 4,
        fsync: str = "batch",
        batch_bytes: int = 1 << 20,
        linger_ms: float = 100.0,
    ) -> None:
        self.root = Path(root)
        self.default_partitions = partitions
        self.fsync = fsync
        self.batch_bytes = batch_bytes
        self.linger_ms = linger_ms
        self._topics: dict[str, int] = {}
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._buffer_sizes: dict[tuple[str, int], int] = {}
        self._first_buffered: float | None = None
        self._dirty: set[tuple[str, int]] = set()
        self._counter = 0
        self._recovered: set[tuple[str, int]] = set()

    def _partitions(self, topic: str) -> int:
        n = self._topics.get(topic)
        if n is None:
            n = self._topics[topic] = ensure_topic(self.root, topic, self.default_partitions)
        return n

    def send(self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None) -> None:
        n = self._partitions(topic)
        self._counter += 1
        p = partition_for(key, n, self._counter)
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        rec = encode_record(ts, key, value)
        k = (topic, p)
        buf = self._buffers.get(k)
        if buf is None:
            buf = self._buffers[k] = []
            self._buffer_sizes[k] = 0
        buf.append(rec)
        self._buffer_sizes[k] += len(rec)
        if self._first_buffered is None:
            self._first_buffered = time.monotonic()
        if self._buffer_sizes[k] >= self.batch_bytes:
            self._write(k)
        elif (time.monotonic() - self._first_buffered) * 1000 >= self.linger_ms:
            self._write_all()

    def _write_all(self) -> None:
        for k in list(self._buffers):
            self._write(k)
        self._first_buffered = None

    def _write(self, k: tuple[str, int]) -> None:
        recs = self._buffers.pop(k, None)
        self._buffer_sizes.pop(k, None)
        if not recs:
            return
        topic, p = k
        part = _Partition(self.root / topic / str(p))
        part.dir.mkdir(parents=True, exist_ok=True)
        with open(part.dir / ".lock", "a+b") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                next_off, base, valid_len = part.end()
                seg = part.seg_path(base)
                if seg.exists() and seg.stat().st_size != valid_len:
                    # A torn record from a crashed writer: cut it off.
                    log.warning("log: cutting torn tail", topic=topic, partition=p, at=valid_len,
                                size=seg.stat().st_size)
                    with open(seg, "r+b") as f:
                        f.truncate(valid_len)
                    idx = part.load_index(base, valid_len)
                    part.seg_path(base, "idx").write_bytes(b"".join(_IDX.pack(*e) for e in idx))
                if valid_len >= SEGMENT_BYTES:
                    base, valid_len = next_off, 0
                    seg = part.seg_path(base)
                index_entries = []
                pos = valid_len
                off = next_off
                for rec in recs:
                    if off % INDEX_INTERVAL == 0:
                        index_entries.append(_IDX.pack(off, pos))
                    pos += len(rec)
                    off += 1
                fd = os.open(seg, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, b"".join(recs)) if len(recs) < 4096 else _write_all_fd(fd, recs)
                    if self.fsync == "always":
                        os.fsync(fd)
                finally:
                    os.close(fd)
                if index_entries:
                    with open(part.seg_path(base, "idx"), "ab") as f:
                        f.write(b"".join(index_entries))
                self._dirty.add(k)
            finally:
                fcntl.flock(lockf, fcntl.LOCK_UN)

    def flush(self) -> None:
        self._write_all()
        if self.fsync != "never":
            for topic, p in self._dirty:
                pdir = self.root / topic / str(p)
                segs = _Partition(pdir).segments()
                if segs:
                    fd = os.open(_Partition(pdir).seg_path(segs[-1]), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        self._dirty.clear()

    def close(self) -> None:
        self.flush()


def _write_all_fd(fd: int, recs: list[bytes]) -> None:
    data = memoryview(b"".join(recs))
    while data:
        n = os.write(fd, data)
        data = data[n:]


class LocalLogReader(TopicReader):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def partitions(self, topic: str) -> list[int]:
        return list(range(topic_partitions(self.root, topic)))

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: _Partition(self.root / topic / str(p)).end()[0] for p in self.partitions(topic)}

    def read(self, topic: str, partition: int, start: int, end: int) -> Iterator[Record]:
        if end <= start:
            return
        part = _Partition(self.root / topic / str(partition))
        segs = part.segments()
        for i, base in enumerate(segs):
            next_base = segs[i + 1] if i + 1 < len(segs) else None
            if next_base is not None and next_base <= start:
                continue
            if base >= end:
                break
            for off, _pos, body in part.scan(base, start_offset=start, stop_offset=end):
                if off < start:
                    continue
                ts, klen = _BODY.unpack_from(body, 0)
                if klen < 0:
                    key, value = None, body[_BODY.size :]
                else:
                    key = body[_BODY.size : _BODY.size + klen]
                    value = body[_BODY.size + klen :]
                yield Record(topic, partition, off, ts, key, value)
