"""The embedded durable log: Kafka's model, crash safety (kill -9), concurrent producers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from observability.transport.base import partition_for
from observability.transport.local_log import LocalLogProducer, LocalLogReader, encode_record, ensure_topic

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
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), topic, name, str(count), str(partitions), str(batch_bytes)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


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
