"""The shared DuckDB store: short transactions, read-only readers, lock retries.

DuckDB lets one process hold a file read-write at a time, and a writer blocks
readers in other processes. The Spark sink, detector, narrator, Airflow tasks
and dashboard all share one file, so every access here is one short
connection: connect, do the work, commit, close. Lock conflicts are retried
with bounded exponential backoff and jitter, so callers never see them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from observability import tables
from observability.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)

_LOCK_MARKERS = ("could not set lock", "conflicting lock", "database is locked", "resource temporarily unavailable")
_CONFIG_MARKER = "different configuration"
_WRITE_FAILURE_MARKERS = (
    "no space left",
    "could not write",
    "disk quota",
    "input/output error",
    "read-only file system",
)


class StoreBusy(RuntimeError):
    """The database stayed locked by other processes for longer than the retry budget."""


class StoreUnwritable(OSError):
    """The database file could not be written (a full disk, an I/O error); nothing was committed.

    Not retried here: the stage's own loop backs off and runs the whole unit of
    work again once there is room (each unit is one transaction, so never half).
    """


def utcnow() -> datetime:
    """Naive UTC wall time, the form every TIMESTAMP column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _LOCK_MARKERS)


def _is_write_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _WRITE_FAILURE_MARKERS)


class Store:
    """Access to one DuckDB file shared by many processes.

    `write(fn)` runs `fn(con)` inside one transaction and retries the whole
    function on a lock conflict, so `fn` must be safe to re-run (it is, when it
    only touches the database). `read(fn)` / `fetch_df(sql)` open read-only.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_wait_seconds: float = 60.0,
        base_delay: float = 0.01,
        max_delay: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self.max_wait_seconds = max_wait_seconds
        self.base_delay = base_delay
        self.max_delay = max_delay
        # DuckDB refuses a read-only and a read-write connection to one file in
        # the same process; serialise this process's connections instead.
        self._local_lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings=None, **kwargs) -> Store:
        if settings is None:
            from observability.settings import get_settings

            settings = get_settings()
        return cls(settings.duckdb_path, **kwargs)

    # -- connections -----------------------------------------------------------
    @contextmanager
    def _connect(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            # Nothing written yet: an empty in-memory database with the schema
            # gives readers empty tables instead of an error.
            con = duckdb.connect(":memory:")
            _apply_ddl(con)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.ConnectionException as exc:
                if _CONFIG_MARKER not in str(exc).lower() or not read_only:
                    raise
                con = duckdb.connect(str(self.path), read_only=False)
        try:
            yield con
        finally:
            con.close()

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        deadline = time.monotonic() + self.max_wait_seconds
        attempt = 0
        while True:
            try:
                with self._local_lock:
                    return fn()
            except (duckdb.IOException, duckdb.ConnectionException, duckdb.TransactionException) as exc:
                if _is_write_failure(exc):
                    raise StoreUnwritable(
                        f"{what}: {self.path} could not be written, nothing committed: {exc}"
                    ) from exc
                if not (_is_lock_conflict(exc) or isinstance(exc, duckdb.TransactionException)):
                    raise
                attempt += 1
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"{what}: {self.path} stayed locked for {self.max_wait_seconds:.0f}s: {exc}"
                    ) from exc
                delay = min(self.max_delay, self.base_delay * 2 ** min(attempt, 10))
                time.sleep(delay * (0.5 + random.random()))

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn(con)` in one read-write transaction (retried on lock conflicts)."""

        def attempt() -> T:
            with self._connect(read_only=False) as con:
                con.begin()
                try:
                    result = fn(con)
                except BaseException:
                    try:
                        con.rollback()
                    except duckdb.Error as exc:  # the failure may have ended the transaction already
                        log.warning("store: rollback failed", error=str(exc))
                    raise
                con.commit()
                return result

        return self._retry(attempt, "write")

    def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `fn(con)` on a short read-only connection (retried on lock conflicts)."""

        def attempt() -> T:
            with self._connect(read_only=True) as con:
                return fn(con)

        return self._retry(attempt, "read")

    # -- conveniences ----------------------------------------------------------
    def execute(self, sql: str, params: Any = None) -> None:
        self.write(lambda con: con.execute(sql, params))

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            self.write(lambda con: con.executemany(sql, rows))

    def fetch_df(self, sql: str, params: Any = None):
        """Query -> pandas DataFrame, read-only."""
        return self.read(lambda con: con.execute(sql, params).df())

    def fetch_all(self, sql: str, params: Any = None) -> list[tuple]:
        return self.read(lambda con: con.execute(sql, params).fetchall())

    def fetch_one(self, sql: str, params: Any = None) -> tuple | None:
        return self.read(lambda con: con.execute(sql, params).fetchone())

    def insert_df(self, table: str, df, *, upsert: bool = False) -> int:
        """Append (or upsert on the primary key) the rows of a DataFrame/Arrow table."""
        if len(df) == 0:
            return 0
        verb = "INSERT OR REPLACE" if upsert else "INSERT"

        def work(con):
            con.register("_rows", df)
            cols = ", ".join(f'"{c}"' for c in df.columns)
            con.execute(f"{verb} INTO {table} ({cols}) SELECT {cols} FROM _rows")
            con.unregister("_rows")
            return len(df)

        return self.write(work)

    def heartbeat(self, component: str, detail: str = "") -> None:
        """Record that a long-running service is alive (read by the health checks)."""
        self.write(lambda con: write_heartbeat(con, component, detail))

    def table_counts(self) -> dict[str, int]:
        def work(con):
            present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            return {
                t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables.ALL_TABLES if t in present
            }

        return self.read(work)

    # -- schema ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Create/upgrade the schema; returns the migration versions applied now."""
        return self.write(_apply_ddl)

    def schema_version(self) -> int:
        row = self.fetch_one(f"SELECT coalesce(max(version), 0) FROM {tables.SCHEMA_VERSION}")
        return int(row[0]) if row else 0


def write_heartbeat(con: duckdb.DuckDBPyConnection, component: str, detail: str = "", when=None) -> None:
    """A service's heartbeats row, inside a transaction the caller holds (`Store.heartbeat`
    opens its own; the Spark sink writes it in a batch's commit)."""
    con.execute(
        f"INSERT OR REPLACE INTO {tables.HEARTBEATS} (component, last_seen, detail) VALUES (?, ?, ?)",
        [component, when or utcnow(), detail],
    )


def _apply_ddl(con: duckdb.DuckDBPyConnection) -> list[int]:
    con.execute(tables.SCHEMA_VERSION_DDL)
    done = {r[0] for r in con.execute(f"SELECT version FROM {tables.SCHEMA_VERSION}").fetchall()}
    applied = []
    for version, description, ddl in tables.MIGRATIONS:
        if version in done:
            continue
        con.execute(ddl)
        con.execute(
            f"INSERT INTO {tables.SCHEMA_VERSION} (version, description, applied_at) VALUES (?, ?, ?)",
            [version, description, utcnow()],
        )
        applied.append(version)
        log.info("schema migrated", version=version, description=description)
    return applied
