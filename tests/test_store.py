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
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_concurrent_writer_processes_and_a_reader_lose_nothing(tmp_path):
    path = tmp_path / "shared.duckdb"
    Store(path).migrate()
    writers, per_writer = ("w1", "w2", "w3"), 15
    total = len(writers) * per_writer
    # the reader polls until it has seen every row; its own 600 s limit is only a safety net
    reader = _spawn(str(path), "reader", "r", "600", str(total))
    assert reader.stdout.readline().split() == ["ready", "0"]  # reader is up before any writer exists
    procs = [_spawn(str(path), "writer", name, str(per_writer)) for name in writers]
    try:
        for p in procs:
            _, err = p.communicate(timeout=150)  # writers may be slow on a loaded machine (fsyncs)...
            assert p.returncode == 0, err[-3000:]  # ...but no lock error ever reaches the caller
        # every write is acknowledged now: a reader that still misses one after this lost it
        try:
            out, err = reader.communicate(timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError("the reader missed acknowledged rows 60 s after every writer exited") from exc
    finally:
        for p in [*procs, reader]:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert reader.returncode == 0, err[-3000:]
    reads, last = int(out.split()[1]), int(out.split()[-1])
    assert reads >= 2 and last == total  # the reader ran alongside the writers and saw every row
    ids = {r[0] for r in Store(path).fetch_all(f"SELECT id FROM {tables.SCENARIO_LABELS}")}
    assert ids == {f"{w}-{i}" for w in writers for i in range(per_writer)}


def test_reader_before_any_write_sees_empty_tables(tmp_path):
    store = Store(tmp_path / "none.duckdb")
    assert store.fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}")[0] == 0
    assert not (tmp_path / "none.duckdb").exists()


HOLDER = r"""
import sys, duckdb
con = duckdb.connect(sys.argv[1])  # read-write: other processes' connections now conflict
print("holding", flush=True)
sys.stdin.readline()
con.close()
"""


def _label_row(con, name: str) -> None:
    from observability.store import utcnow

    con.execute(
        f"INSERT INTO {tables.SCENARIO_LABELS} (id, scenario_type, service, root_service, start_time, end_time, created_at)"
        " VALUES (?, 'error_surge', 'a', 'a', ?, ?, ?)",
        [name, utcnow(), utcnow(), utcnow()],
    )


def test_a_lock_held_past_the_budget_raises_store_busy_and_the_store_works_after(tmp_path):
    import pytest

    from observability.store import StoreBusy

    path = tmp_path / "db.duckdb"
    store = Store(path, max_wait_seconds=1.0)
    store.migrate()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreBusy, match="stayed locked"):
            store.write(lambda con: _label_row(con, "blocked"))
    finally:
        holder.communicate("\n", timeout=30)
    store.write(lambda con: _label_row(con, "after"))
    assert store.fetch_all(f"SELECT id FROM {tables.SCENARIO_LABELS}") == [("after",)]


def test_work_that_raises_inside_write_leaves_nothing_behind(tmp_path):
    import pytest

    store = Store(tmp_path / "db.duckdb")
    store.migrate()

    def half_then_fail(con):
        _label_row(con, "first")
        raise ValueError("the work failed half-way")

    with pytest.raises(ValueError, match="half-way"):
        store.write(half_then_fail)
    assert store.fetch_one(f"SELECT count(*) FROM {tables.SCENARIO_LABELS}") == (0,)


def test_errors_that_are_not_lock_conflicts_are_raised_at_once_not_retried(tmp_path):
    import duckdb
    import pytest

    store = Store(tmp_path / "db.duckdb", max_wait_seconds=60)
    store.migrate()
    calls = []

    def duplicate_key(con):
        calls.append(1)
        _label_row(con, "same")
        _label_row(con, "same")

    with pytest.raises(duckdb.ConstraintException):
        store.write(duplicate_key)
    with pytest.raises(duckdb.ParserException):
        store.write(lambda con: (calls.append(1), con.execute("SELEC 1")))
    assert len(calls) == 2  # once each: a retry could not have helped


def test_a_full_disk_gives_a_clear_error_and_no_half_commit(small_disk):
    """DuckDB on a real full tmpfs: the write fails with the OS's reason, the committed
    rows stay, and once there is room the same write commits whole."""
    import pytest

    store = Store(small_disk.path / "db.duckdb")
    store.migrate()
    store.write(lambda con: _label_row(con, "before"))
    big = [(f"r{i}", "x" * 2000) for i in range(5000)]  # ~10 MB for a 2 MB disk

    def bulk(con):
        con.execute("CREATE TABLE IF NOT EXISTS bulk (id VARCHAR, pad VARCHAR)")
        con.executemany("INSERT INTO bulk VALUES (?, ?)", big)
        _label_row(con, "with-bulk")

    from observability.store import StoreUnwritable

    with pytest.raises(StoreUnwritable, match="No space left on device"):
        store.write(bulk)
    assert store.fetch_all(f"SELECT id FROM {tables.SCENARIO_LABELS}") == [("before",)]
    small_disk.resize("64m")
    store.write(bulk)
    assert store.fetch_one("SELECT count(*) FROM bulk") == (5000,)
    assert {r[0] for r in store.fetch_all(f"SELECT id FROM {tables.SCENARIO_LABELS}")} == {"before", "with-bulk"}
