"""The shared DuckDB store under concurrency: several writer processes and a reader, nothing lost, no error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from observability import tables
from observability.store import Store

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import sys, time
from observability.store import Store, utcnow
from observability import tables
path, role, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = Store(path, max_wait_seconds=90)
if role == "writer":
    for i in range(n):
        store.execute(
            f"INSERT INTO {tables.SCENARIO_LABELS} (id, scenario_type, service, root_service, start_time, end_time, created_at)"
            " VALUES (?, 'error_surge', ?, ?, ?, ?, ?)",
            [f"{name}-{i}", name, name, utcnow(), utcnow(), utcnow()],
        )
    print("wrote", n, flush=True)
else:
    seen, last = 0, -1
    deadline = time.monotonic() + n
    while time.monotonic() < deadline:
        count = store.fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}")[0]
        assert count >= last, (count, last)  # committed rows never disappear
        last = count
        seen += 1
        if seen == 1:
            print("ready", count, flush=True)  # the writers start only after this first read
        if count >= int(sys.argv[5]):
            break
        time.sleep(0.02)
    print("reads", seen, "last", last, flush=True)
"""


def _spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def test_concurrent_writer_processes_and_a_reader_lose_nothing(tmp_path):
    path = tmp_path / "shared.duckdb"
    Store(path).migrate()
    writers, per_writer = ("w1", "w2", "w3"), 15
    total = len(writers) * per_writer
    reader = _spawn(str(path), "reader", "r", "120", str(total))
    assert reader.stdout.readline().split() == ["ready", "0"]  # reader is up before any writer exists
    procs = [_spawn(str(path), "writer", name, str(per_writer)) for name in writers]
    for p in procs + [reader]:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]  # no lock error ever reaches the caller
    reads, last = int(out.split()[1]), int(out.split()[-1])
    assert reads >= 2 and last == total  # the reader ran alongside the writers and saw every row
    ids = {r[0] for r in Store(path).fetch_all(f"SELECT id FROM {tables.SCENARIO_LABELS}")}
    assert ids == {f"{w}-{i}" for w in writers for i in range(per_writer)}


def test_reader_before_any_write_sees_empty_tables(tmp_path):
    store = Store(tmp_path / "none.duckdb")
    assert store.fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}")[0] == 0
    assert not (tmp_path / "none.duckdb").exists()
