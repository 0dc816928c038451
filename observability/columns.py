"""Typed column lists: each cross-stage record defined once, every storage form derived from it.

A record (the telemetry event, an OTLP log record, a metric point) is a tuple
of `Column(name, type)`. The forms the stages need come from that one list:
the Arrow schema of the bronze Parquet files and of what the Spark source
yields, the Spark SQL schema of the source, and the DuckDB column types (a
`read_json` column map, a table's types). Adding a field to a record is one
edit, and every form follows.

A column with a `default` is optional on the wire; readers of files written
before the column existed substitute the default (`sql_with_default`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# logical type -> (Spark SQL type, DuckDB type). "json" is JSON text in Arrow and Spark.
TYPES: dict[str, tuple[str, str]] = {
    "string": ("STRING", "VARCHAR"),
    "int": ("INT", "INTEGER"),
    "bigint": ("BIGINT", "BIGINT"),
    "double": ("DOUBLE", "DOUBLE"),
    "timestamp": ("TIMESTAMP", "TIMESTAMP"),
    "json": ("STRING", "JSON"),
    "double[]": ("ARRAY<DOUBLE>", "DOUBLE[]"),
    "bigint[]": ("ARRAY<BIGINT>", "BIGINT[]"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a key of TYPES
    default: Any = None  # the value of a record (or an older file) that lacks the field

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}")


def names(columns: Iterable[Column]) -> tuple[str, ...]:
    return tuple(c.name for c in columns)


def select(columns: Iterable[Column], wanted: Iterable[str]) -> tuple[Column, ...]:
    """The named columns, in the order asked for (a KeyError names a missing one)."""
    by_name = {c.name: c for c in columns}
    return tuple(by_name[name] for name in wanted)


def spark_ddl(columns: Iterable[Column]) -> str:
    """`name TYPE, ...`: a Spark schema string (e.g. a Python data source's `schema()`)."""
    return ", ".join(f"{c.name} {TYPES[c.type][0]}" for c in columns)


def duckdb_type(column: Column) -> str:
    return TYPES[column.type][1]


def duckdb_json_columns(columns: Iterable[Column], *, timestamp_type: str = "VARCHAR") -> str:
    """A `read_json(..., columns=...)` map. Timestamps default to VARCHAR: the wire form is
    ISO 8601 text (or epoch ms), parsed by the reader itself."""
    parts = []
    for c in columns:
        t = timestamp_type if c.type == "timestamp" else duckdb_type(c)
        parts.append(f"{c.name}: '{t}'")
    return "{" + ", ".join(parts) + "}"


def arrow_type(column: Column, timestamp=None):
    import pyarrow as pa

    if column.type == "timestamp":
        return timestamp if timestamp is not None else pa.timestamp("ms")  # UTC wall time
    return {
        "string": pa.string(),
        "json": pa.string(),
        "int": pa.int32(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "double[]": pa.list_(pa.float64()),
        "bigint[]": pa.list_(pa.int64()),
    }[column.type]


def arrow_schema(columns: Iterable[Column], *, timestamp=None):
    """The Arrow schema; timestamps are `timestamp[ms]` (naive, UTC) unless another type is given
    (Spark's Arrow input wants `timestamp[us, tz=UTC]`)."""
    import pyarrow as pa

    return pa.schema([(c.name, arrow_type(c, timestamp)) for c in columns])


def sql_with_default(column: Column, present: Iterable[str], *, cast: bool = False) -> str:
    """A SELECT expression for `column` over files that may predate it: the default where it is
    missing (absent from every file, or NULL in the files that lack it). With `cast`, the value
    is cast to the column's stored type (JSON as text), so a file whose writer typed an all-NULL
    column as NULL reads like the others."""
    if column.default is None:
        expr = column.name if column.name in set(present) else "NULL"
    else:
        literal = (
            "'" + str(column.default).replace("'", "''") + "'"
            if isinstance(column.default, str)
            else repr(column.default)
        )
        expr = f"coalesce({column.name}, {literal})" if column.name in set(present) else literal
    if cast:
        expr = f"CAST({expr} AS {'VARCHAR' if column.type == 'json' else duckdb_type(column)})"
    return f"{expr} AS {column.name}"
