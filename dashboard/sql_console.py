"""The SQL console's engine: a locked-down read-only connection, a timeout, a row cap, saved queries.

Why each part:
- `connect`: the DuckDB file is opened `read_only` (never the write lock: the
  pipeline's writers keep working) with `enable_external_access=false` (no file,
  URL, ATTACH, COPY, INSTALL) and `lock_configuration=true` (no SET can undo
  that). A lock conflict with a writer, or another connection of this process
  with a different configuration, is waited out with backoff, like `Store`.
- `run`: `sql_guard.check` first; then the query runs in the caller's thread
  while a timer interrupts it at the deadline; at most `max_rows` rows are
  fetched (one more tells that there were more), so `SELECT * FROM range(1e12)`
  is cheap.
- Saved queries are a JSON file in DATA_DIR (`sql_console/saved_queries.json`),
  written atomically: the console never writes the DuckDB store.
- `table_docs`: the tables and columns as `observability/tables.py` defines
  them (the migrations applied to an in-memory database), with the comments
  written beside them there.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from dashboard.sql_guard import Refused, check
from observability import tables
from observability.store import _apply_ddl, _is_lock_conflict

LOCKED_CONFIG = {"enable_external_access": False, "lock_configuration": True}
_CONFIG_MARKER = "different configuration"
SAVED_FILE = Path("sql_console") / "saved_queries.json"


class QueryTimeout(RuntimeError):
    """The query ran past the console's statement timeout and was interrupted."""


@dataclass
class Result:
    frame: pd.DataFrame
    truncated: bool  # more rows than max_rows existed; only the first max_rows are in frame
    seconds: float


@contextmanager
def connect(path: Path, *, wait_seconds: float = 10.0, lock: threading.RLock | None = None) -> Iterator:
    """A read-only, external-access-free, configuration-locked connection to `path` (closed after)."""
    path = Path(path)
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    with lock if lock is not None else threading.RLock():
        while True:
            try:
                if path.exists():
                    con = duckdb.connect(str(path), read_only=True, config=LOCKED_CONFIG)
                else:
                    con = duckdb.connect(":memory:")
                    _apply_ddl(con)  # nothing written yet: the schema with empty tables
                    for key, value in LOCKED_CONFIG.items():
                        con.execute(f"SET {key} = {str(value).lower()}")
                break
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not (_is_lock_conflict(exc) or _CONFIG_MARKER in str(exc).lower()):
                    raise
                attempt += 1
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, 0.01 * 2**attempt) * (0.5 + random.random()))
        try:
            yield con
        finally:
            con.close()


def run(path: Path, sql: str, *, timeout_seconds: float, max_rows: int, lock: threading.RLock | None = None) -> Result:
    """Check and run one read-only query. Raises `Refused`, `QueryTimeout` or `duckdb.Error` (its message is shown)."""
    checked = check(sql)
    started = time.monotonic()
    with connect(path, lock=lock) as con:
        timer = threading.Timer(timeout_seconds, con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            # a relation streams (a DB-API result would materialise every row before the first batch)
            reader = con.sql(checked.sql).to_arrow_reader(min(max_rows + 1, 2048))
            batches, n = [], 0
            for batch in reader:
                batches.append(batch)
                n += batch.num_rows
                if n > max_rows:
                    break
            frame = _frame(reader.schema, batches)
        except duckdb.InterruptException as exc:
            raise QueryTimeout(
                f"The query ran longer than {timeout_seconds:g} s (SQL_CONSOLE_TIMEOUT_SECONDS) and was stopped."
            ) from exc
        finally:
            timer.cancel()
    truncated = len(frame) > max_rows
    return Result(frame.iloc[:max_rows], truncated, time.monotonic() - started)


def _frame(schema, batches) -> pd.DataFrame:
    import pyarrow as pa

    return pa.Table.from_batches(batches, schema=schema).to_pandas() if batches else schema.empty_table().to_pandas()


def to_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


# -- saved queries ---------------------------------------------------------------------------
def saved_path(data_dir: Path) -> Path:
    return Path(data_dir) / SAVED_FILE


def load_saved(data_dir: Path) -> dict[str, str]:
    """name -> SQL; an unreadable file reads as none saved (it is never overwritten silently: see save)."""
    p = saved_path(data_dir)
    if not p.exists():
        return {}
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object of name -> SQL")
    return {str(k): str(v) for k, v in data.items()}


def _store_saved(data_dir: Path, queries: dict[str, str]) -> None:
    p = saved_path(data_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(queries.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def save(data_dir: Path, name: str, sql: str) -> None:
    """Save (or replace) a named query; only a query the console would run is saved."""
    name = name.strip()
    if not name:
        raise Refused("Give the query a name to save it.")
    check(sql)
    queries = load_saved(data_dir)
    queries[name] = sql.strip()
    _store_saved(data_dir, queries)


def delete(data_dir: Path, name: str) -> None:
    queries = load_saved(data_dir)
    if queries.pop(name, None) is not None:
        _store_saved(data_dir, queries)


# -- the tables, documented from observability/tables.py ---------------------------------------
_WRITER = re.compile(r'^([A-Z_]+) = "(\w+)"\s*#\s*(.+)$', re.M)
_COLUMN_COMMENT = re.compile(r"^\s*(\w+)\s+[A-Z][^\n]*?--\s*(.+)$", re.M)


def table_docs() -> pd.DataFrame:
    """One row per column of every table in observability/tables.py: table, column, type, note (its comment)."""
    con = duckdb.connect(":memory:")
    try:
        _apply_ddl(con)
        cols = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = 'memory' AND schema_name = 'main' ORDER BY table_name, column_index"
        ).df()
    finally:
        con.close()
    notes: dict[tuple[str, str], str] = {}
    for _version, _desc, ddl in tables.MIGRATIONS:
        for block in re.split(r"CREATE TABLE IF NOT EXISTS ", ddl)[1:]:
            table = block.split(maxsplit=1)[0]
            body = block.split(");", 1)[0]
            for col, note in _COLUMN_COMMENT.findall(body):
                notes[(table, col)] = note.strip()
        for table, col, note in re.findall(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)[^\n]*?--\s*(.+)", ddl):
            notes[(table, col)] = note.strip()
    cols["note"] = [notes.get((t, c), "") for t, c in zip(cols["table_name"], cols["column_name"], strict=True)]
    return cols.rename(columns={"table_name": "table", "column_name": "column", "data_type": "type"})


def table_writers() -> dict[str, str]:
    """table -> its comment in observability/tables.py (who writes it, what it holds)."""
    src = inspect.getsource(tables)
    return {name: note.strip() for _const, name, note in _WRITER.findall(src)}
