"""The embedded durable log: Kafka's model, crash safety (kill -9), concurrent producers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observability.transport.base import partition_for
from observability.transport.local_log import (
    QUARANTINED_KEY,
    LocalLogProducer,
    LocalLogReader,
    LogCorruption,
    encode_record,
    ensure_topic,
)

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import json, sys
from observability.transport.local_log import LocalLogProducer, ensure_topic
root, topic, name, count, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ensure_topic(root, topic, partitions)
p = LocalLogProducer(root, partitions=partitions, fsync="batch", batch_bytes=int(sys.argv[6]), linger_ms=5)
i = 0
while count < 0 or i < count:
    key = f"{name}-{i % 97}".encode()
    p.send(topic, json.dumps({"w": name, "seq": i, "pad": "x" * (i % 3000)}).encode(), key, timestamp_ms=1_700_000_000_000 + i)
    i += 1
    if i % 50 == 0:
        p.flush()
        print(i, flush=True)  # everything up to i is durable
p.flush()
print(i, flush=True)
"""


def _writer(root: Path, topic: str, name: str, count: int, partitions: int = 1, batch_bytes: int = 1 << 20):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), topic, name, str(count), str(partitions), str(batch_bytes)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _read_all(root: Path, topic: str):
    reader = LocalLogReader(root)
    ends = reader.end_offsets(topic)
    return {p: list(reader.read(topic, p, 0, end)) for p, end in ends.items()}


def test_records_keep_topic_partition_offset_key_and_timestamp(tmp_path):
    ensure_topic(tmp_path, "t", 4)
    with LocalLogProducer(tmp_path, partitions=4) as producer:
        for i in range(1000):
            producer.send("t", f"v{i}".encode(), f"k{i % 10}".encode(), timestamp_ms=1_000 + i)
    parts = _read_all(tmp_path, "t")
    assert sum(len(v) for v in parts.values()) == 1000
    seen = []
    for p, recs in parts.items():
        assert [r.offset for r in recs] == list(range(len(recs)))  # contiguous from 0
        for r in recs:
            assert r.partition == p == partition_for(r.key, 4)  # a key stays in one partition
            i = int(r.value[1:])
            assert r.key == f"k{i % 10}".encode() and r.timestamp_ms == 1_000 + i
            seen.append(i)
    assert sorted(seen) == list(range(1000))
    # reads of a middle range, across the sparse index
    reader = LocalLogReader(tmp_path)
    p, recs = max(parts.items(), key=lambda kv: len(kv[1]))
    assert [r.offset for r in reader.read("t", p, 100, 150)] == list(range(100, 150))


def test_kill_9_never_loses_flushed_records_and_torn_tail_is_never_data(tmp_path):
    proc = _writer(tmp_path, "crash", "a", -1, partitions=1, batch_bytes=256 * 1024)
    durable = 0
    deadline = time.monotonic() + 30
    while durable < 1500 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        durable = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # mid-loop, likely mid-append
    proc.wait()
    proc.stdout.close()
    assert durable >= 1500

    recs = _read_all(tmp_path, "crash")[0]
    seqs = [json.loads(r.value)["seq"] for r in recs]  # every record read is a whole, valid one
    assert seqs == list(range(len(seqs)))  # in order, no gaps, nothing invented
    assert len(seqs) >= durable  # every flushed record survived

    # A torn record at the tail (as a crash mid-write leaves): never read, cut at the next append.
    seg = sorted((tmp_path / "crash" / "0").glob("*.log"))[-1]
    whole = seg.stat().st_size
    torn = encode_record(1, b"k", b'{"seq": -1, "torn": true}' * 20)
    with open(seg, "ab") as f:
        f.write(torn[: len(torn) // 2])
    assert [r.offset for r in _read_all(tmp_path, "crash")[0]] == list(range(len(seqs)))
    with LocalLogProducer(tmp_path, partitions=1) as producer:
        producer.send("crash", json.dumps({"seq": len(seqs)}).encode(), b"k", timestamp_ms=5)
    after = _read_all(tmp_path, "crash")[0]
    assert [json.loads(r.value)["seq"] for r in after] == list(range(len(seqs) + 1))
    assert seg.stat().st_size == whole + len(encode_record(5, b"k", json.dumps({"seq": len(seqs)}).encode()))


def test_two_producer_processes_lose_nothing_and_offsets_stay_contiguous(tmp_path):
    ensure_topic(tmp_path, "shared", 4)
    count = 3000
    procs = [_writer(tmp_path, "shared", name, count, partitions=4, batch_bytes=16 * 1024) for name in ("a", "b")]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and int(out.split()[-1]) == count
    parts = _read_all(tmp_path, "shared")
    got = {"a": [], "b": []}
    for recs in parts.values():
        assert [r.offset for r in recs] == list(range(len(recs)))
        per_writer_last = {}
        for r in recs:
            v = json.loads(r.value)
            assert per_writer_last.get(v["w"], -1) < v["seq"]  # each producer's order holds in a partition
            per_writer_last[v["w"]] = v["seq"]
            got[v["w"]].append(v["seq"])
    assert sorted(got["a"]) == list(range(count)) and sorted(got["b"]) == list(range(count))


# --- corruption is not a torn tail (issue 20, bug 2) ---------------------------------------------


def _fill(root: Path, topic: str, count: int, partitions: int = 1, **kwargs) -> None:
    ensure_topic(root, topic, partitions)
    with LocalLogProducer(root, partitions=partitions, **kwargs) as producer:
        for i in range(count):
            producer.send(topic, json.dumps({"seq": i}).encode(), b"k", timestamp_ms=1_000 + i)


def _record_position(seg: Path, offset: int) -> int:
    from observability.transport.local_log import _Partition

    part = _Partition(seg.parent)
    return next(pos for off, pos, _ in part.scan(int(seg.stem)) if off == offset)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["body", "length"])
@pytest.mark.parametrize("bad_offset", [500, 900])  # before / after the last sparse-index entry (768)
def test_a_corrupt_record_mid_segment_stops_readers_and_is_never_cut(tmp_path, where, bad_offset):
    _fill(tmp_path, "t", 1000)
    seg = sorted((tmp_path / "t" / "0").glob("*.log"))[0]
    pos = _record_position(seg, bad_offset)
    _flip(seg, pos + (20 if where == "body" else 1))  # a byte of the value, or of the length field
    before = seg.read_bytes()

    reader = LocalLogReader(tmp_path)
    with pytest.raises(LogCorruption) as exc:
        list(reader.read("t", 0, 0, 1000))
    assert exc.value.path == seg and exc.value.position == pos and exc.value.offset == bad_offset
    assert str(seg) in str(exc.value) and f"offset {bad_offset}" in str(exc.value)
    assert [json.loads(r.value)["seq"] for r in reader.read("t", 0, 0, bad_offset)] == list(range(bad_offset))

    # A writer appends after the last valid record it can count from, or refuses: it never cuts.
    try:
        with LocalLogProducer(tmp_path, partitions=1) as producer:
            producer.send("t", b'{"seq": 1000}', b"k", timestamp_ms=5)
    except LogCorruption:
        assert seg.read_bytes() == before
    else:
        assert seg.read_bytes()[: len(before)] == before
        assert list(reader.read("t", 0, 1000, 1001))[0].value == b'{"seq": 1000}'


@pytest.mark.parametrize("where", ["body", "length"])
def test_repair_quarantines_the_record_and_every_later_offset_keeps_its_data(tmp_path, where):
    from observability.transport import repair

    _fill(tmp_path, "t", 1000)
    seg = sorted((tmp_path / "t" / "0").glob("*.log"))[0]
    pos = _record_position(seg, 500)
    original = seg.read_bytes()
    _flip(seg, pos + (20 if where == "body" else 1))

    assert repair.main([str(tmp_path), "--topic", "t"]) == 1  # report only
    assert repair.main([str(tmp_path), "--topic", "t", "--apply"]) == 0
    recs = list(LocalLogReader(tmp_path).read("t", 0, 0, 1000))
    assert [r.offset for r in recs] == list(range(1000))
    assert recs[500].key == QUARANTINED_KEY
    marker = json.loads(recs[500].value)["quarantined_record"]
    assert marker["offset"] == 500
    record_len = len(encode_record(1_500, b"k", b'{"seq": 500}'))
    assert Path(marker["file"]).read_bytes() == _flip_bytes(original, pos, where)[pos : pos + record_len]
    assert [json.loads(r.value)["seq"] for r in recs if r.offset != 500] == [i for i in range(1000) if i != 500]
    with LocalLogProducer(tmp_path, partitions=1) as producer:  # appends go on at the next offset
        producer.send("t", b'{"seq": 1000}', b"k", timestamp_ms=5)
    assert LocalLogReader(tmp_path).end_offsets("t") == {0: 1001}
    assert repair.main([str(tmp_path)]) == 0  # clean now


def _flip_bytes(data: bytes, pos: int, where: str) -> bytes:
    out = bytearray(data)
    out[pos + (20 if where == "body" else 1)] ^= 0x40
    return bytes(out)


def test_a_torn_tail_is_cut_but_its_bytes_are_kept_in_quarantine(tmp_path):
    _fill(tmp_path, "t", 10)
    seg = sorted((tmp_path / "t" / "0").glob("*.log"))[0]
    torn = encode_record(1, b"k", b'{"seq": -1}' * 50)[:300]
    with open(seg, "ab") as f:
        f.write(torn)
    _fill(tmp_path, "t", 1)
    assert LocalLogReader(tmp_path).end_offsets("t") == {0: 11}
    kept = list((tmp_path / "t" / "0" / "quarantine").glob("*.torn"))
    assert [k.read_bytes() for k in kept] == [torn]


# --- every write is checked (issue 12: a full disk never reports success) ------------------------

SHORT_WRITER = r"""
import json, resource, signal, sys
from observability.transport.local_log import LocalLogProducer, ensure_topic
root, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: a short write, then EFBIG
ensure_topic(root, "t", 1)
p = LocalLogProducer(root, partitions=1, batch_bytes=1 << 30, linger_ms=1e9)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
for i in range(2000):
    p.send("t", json.dumps({"seq": i, "pad": "x" * 40}).encode(), b"k", timestamp_ms=i)
try:
    p.flush()
    print("flushed", flush=True)
except OSError as exc:
    print("failed", exc.errno, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
p.flush()  # the same producer, once there is room again: everything, once
print("retried", flush=True)
"""


def test_a_short_write_fails_the_flush_leaves_no_torn_record_and_the_retry_writes_everything(tmp_path):
    import errno

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", SHORT_WRITER, str(tmp_path), "50000"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["failed", str(errno.EFBIG), "retried"]
    recs = list(LocalLogReader(tmp_path).read("t", 0, 0, 10**9))
    assert [json.loads(r.value)["seq"] for r in recs] == list(range(2000))
    assert not (tmp_path / "t" / "0" / "quarantine").exists()  # the failed append was undone, not cut later


def test_send_pushes_back_once_the_buffer_is_full_and_a_write_fails(tmp_path, monkeypatch):
    """A fake for a full disk (os.write raising ENOSPC) in-process; the tmpfs test in
    test_replay.py covers the real one."""
    import errno

    from observability.transport import local_log

    ensure_topic(tmp_path, "t", 1)
    producer = LocalLogProducer(tmp_path, partitions=1, batch_bytes=1024, max_buffer_bytes=4096)
    real_write = os.write
    monkeypatch.setattr(local_log.os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    taken = 0
    with pytest.raises(OSError, match="full"):
        for i in range(1000):
            producer.send("t", b"x" * 100, None, timestamp_ms=i)
            taken += 1
    per_record = len(encode_record(0, None, b"x" * 100))
    assert taken == -(-4096 // per_record)  # buffered up to the limit, then refused
    with pytest.raises(OSError):
        producer.flush()
    monkeypatch.setattr(local_log.os, "write", real_write)
    producer.flush()
    assert LocalLogReader(tmp_path).end_offsets("t") == {0: taken}


def test_a_failed_fsync_rewrites_what_it_may_have_lost(tmp_path, monkeypatch):
    """A fake for EIO from fsync (cannot be provoked on a healthy disk): the records written
    since the last good fsync are written again, so a retried flush never reports lost data
    as durable (at-least-once: they may then be in the log twice)."""
    from observability.transport import local_log

    ensure_topic(tmp_path, "t", 1)
    producer = LocalLogProducer(tmp_path, partitions=1, fsync="batch")
    for i in range(10):
        producer.send("t", str(i).encode(), None, timestamp_ms=i)
    real_fsync = os.fsync
    monkeypatch.setattr(local_log.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(OSError, match="EIO"):
        producer.flush()
    monkeypatch.setattr(local_log.os, "fsync", real_fsync)
    producer.flush()
    values = [r.value for r in LocalLogReader(tmp_path).read("t", 0, 0, 100)]
    assert values == [str(i).encode() for i in range(10)] * 2


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_every_fsync_mode_keeps_every_record_and_null_keys(tmp_path, fsync):
    ensure_topic(tmp_path, "t", 3)
    with LocalLogProducer(tmp_path, partitions=3, fsync=fsync, batch_bytes=256) as producer:
        for i in range(300):
            producer.send("t", str(i).encode(), None, timestamp_ms=i)
    parts = _read_all(tmp_path, "t")
    assert sorted(len(v) for v in parts.values()) == [100, 100, 100]  # round robin without a key
    assert all(r.key is None for v in parts.values() for r in v)
    assert sorted(int(r.value) for v in parts.values() for r in v) == list(range(300))


def test_segments_roll_over_at_segment_bytes_and_reads_cross_them(tmp_path):
    ensure_topic(tmp_path, "t", 1)
    with LocalLogProducer(tmp_path, partitions=1, segment_bytes=4096, batch_bytes=512) as producer:
        for i in range(2000):
            producer.send("t", json.dumps({"seq": i}).encode(), b"k", timestamp_ms=i)
    segs = sorted((tmp_path / "t" / "0").glob("*.log"))
    assert len(segs) > 10
    reader = LocalLogReader(tmp_path)
    assert [json.loads(r.value)["seq"] for r in reader.read("t", 0, 0, 2000)] == list(range(2000))
    assert [r.offset for r in reader.read("t", 0, 777, 1333)] == list(range(777, 1333))
    assert reader.end_offsets("t") == {0: 2000}


def test_producers_taking_turns_on_a_partition_keep_offsets_index_and_rolls_right(tmp_path):
    """A producer remembers where its own last append ended, to skip re-reading the log's end;
    another producer's appends and segment rolls in between must still be seen."""
    ensure_topic(tmp_path, "t", 1)
    a, b = (LocalLogProducer(tmp_path, partitions=1, segment_bytes=4096) for _ in range(2))
    seq = 0
    for turn in range(60):
        producer = b if turn % 3 == 0 else a  # a twice in a row (its remembered end holds), then b
        for _ in range(128):  # ~3.7 KB: nearly every turn ends past segment_bytes, so the next one rolls
            producer.send("t", json.dumps({"seq": seq}).encode(), b"k", timestamp_ms=seq)
            seq += 1
        producer.flush()
    assert len(list((tmp_path / "t" / "0").glob("*.log"))) > 10  # both rolled segments
    reader = LocalLogReader(tmp_path)
    assert reader.end_offsets("t") == {0: seq}
    assert [json.loads(r.value)["seq"] for r in reader.read("t", 0, 0, seq)] == list(range(seq))
    for start in range(0, seq, 16):  # through the sparse index of every segment: its offsets must be right
        got = [(r.offset, json.loads(r.value)["seq"]) for r in reader.read("t", 0, start, start + 3)]
        assert got == [(o, o) for o in range(start, min(start + 3, seq))]


def _mixed_records(n: int) -> list[tuple[str, bytes | None, bytes, int | None]]:
    """Two topics, keyed and unkeyed records, values of every size up to a few KiB."""
    return [
        ("t" if i % 5 else "u", None if i % 6 == 1 else f"k{i % 13}".encode(), f"v{i}:".encode() + b"x" * (i % 3000), i)
        for i in range(2000)
    ]


def test_send_many_writes_the_same_log_as_send_one_record_at_a_time(tmp_path):
    # small batches and segments, so both paths write mid-way and roll segments
    opts = dict(partitions=3, batch_bytes=20_000, segment_bytes=300_000, linger_ms=10**9)
    records = _mixed_records(2000)
    one, many = tmp_path / "one", tmp_path / "many"
    with LocalLogProducer(one, **opts) as producer:
        for topic, key, value, ts in records:
            producer.send(topic, value, key, timestamp_ms=ts)
    with LocalLogProducer(many, **opts) as producer:
        for start in range(0, len(records), 300):  # requests of 300 records
            producer.send_many(records[start : start + 300])
    for topic in ("t", "u"):
        got = {
            p: [(r.offset, r.key, r.value, r.timestamp_ms) for r in recs] for p, recs in _read_all(many, topic).items()
        }
        want = {
            p: [(r.offset, r.key, r.value, r.timestamp_ms) for r in recs] for p, recs in _read_all(one, topic).items()
        }
        assert got == want and sum(map(len, got.values())) == sum(r[0] == topic for r in records)


def test_send_many_keeps_records_of_a_failed_write_and_pushes_back_once_the_buffer_is_full(tmp_path, monkeypatch):
    """As `send()` above: a write failing with ENOSPC (faked in-process) keeps the records a
    `send_many` took; once the buffer is past its limit the next call refuses, taking none."""
    import errno

    from observability.transport import local_log

    ensure_topic(tmp_path, "t", 1)
    producer = LocalLogProducer(tmp_path, partitions=1, batch_bytes=1024, max_buffer_bytes=4096)
    real_write = os.write
    monkeypatch.setattr(local_log.os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    batch = [("t", None, b"x" * 100, i) for i in range(30)]  # ~3.4 KiB: under the limit, over batch_bytes
    producer.send_many(batch)  # the write fails inside: the records stay buffered
    producer.send_many(batch)  # still under the limit before it: taken
    with pytest.raises(OSError, match="full"):
        producer.send_many(batch)  # past the limit: refused, nothing taken
    with pytest.raises(OSError):
        producer.flush()
    monkeypatch.setattr(local_log.os, "write", real_write)
    producer.flush()
    assert [r.timestamp_ms for r in LocalLogReader(tmp_path).read("t", 0, 0, 100)] == list(range(30)) * 2
