"""What the SQL console may run: one read-only query, judged by DuckDB's own parser.

Pure (no database file, no I/O): `check(sql)` returns the single statement to
run or raises `Refused` with a message a person can act on. It is the first of
two layers; the console's connection is the second (read-only, external access
disabled, configuration locked: `sql_console.connect`), so a query this module
misjudged still cannot write, read files or change settings.

Rules:
- exactly one statement (comments and a trailing `;` are fine): DuckDB's
  `extract_statements` splits, so `SELECT 1; DROP ...` is two and refused;
- of type SELECT (this covers WITH ... SELECT, DESCRIBE, SHOW, SUMMARIZE, FROM-first
  queries); INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, COPY, EXPORT, ATTACH,
  DETACH, INSTALL, LOAD, SET, RESET, PRAGMA, CALL, CHECKPOINT, VACUUM,
  transactions ... are refused by type, whatever their case or a CTE in front;
- the query's syntax tree (`json_serialize_sql`) names no function that reads
  files, lists them or runs SQL from a string (read_csv, read_parquet, read_json,
  read_text, read_blob, glob, query, ... `DENIED_FUNCTIONS` and the prefixes in
  `DENIED_PREFIXES`), and no table that is a path or URL (`FROM 'x.csv'`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

DENIED_FUNCTIONS = frozenset(
    {
        "glob",
        "query",
        "query_table",
        "getenv",
        "sniff_csv",
        "parquet_scan",
        "load_aws_credentials",
        "which_secret",
        "checkpoint",
        "force_checkpoint",
    }
)
DENIED_PREFIXES = (
    "read_",  # read_csv(_auto), read_parquet, read_json(_auto|_objects), read_ndjson, read_text, read_blob, read_xlsx
    "parquet_",  # parquet_metadata, parquet_schema, parquet_file_metadata, parquet_kv_metadata
    "iceberg_",
    "delta_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "csv_",
)
PATH_MARKERS = ("/", "\\", ".", ":", "~")
ALLOWED_TYPES = (duckdb.StatementType.SELECT,)

_TYPE_NAMES = {
    "INSERT": "INSERT writes rows",
    "UPDATE": "UPDATE writes rows",
    "DELETE": "DELETE writes rows",
    "CREATE": "CREATE changes the schema",
    "DROP": "DROP changes the schema",
    "ALTER": "ALTER changes the schema",
    "COPY": "COPY reads or writes files",
    "EXPORT": "EXPORT writes files",
    "ATTACH": "ATTACH opens another database",
    "DETACH": "DETACH changes the attached databases",
    "LOAD": "INSTALL and LOAD add extensions",
    "SET": "SET, RESET and USE change the session's settings or variables",
    "PRAGMA": "PRAGMA can change settings (query pragma_* table functions or duckdb_* views instead)",
    "CALL": "CALL and CHECKPOINT run procedures (use SELECT * FROM the table function instead)",
    "VACUUM": "VACUUM rewrites the database",
    "TRANSACTION": "transactions are not needed for a read-only query",
    "MULTI": "PIVOT statements run several statements (use PIVOT inside a SELECT ... FROM (PIVOT ...))",
    "EXPLAIN": "EXPLAIN is not supported here (run the query itself; ANALYZE would execute it anyway)",
}


class Refused(ValueError):
    """The console will not run this SQL; `str()` says why, for the user."""


@dataclass(frozen=True)
class Checked:
    sql: str  # the one statement, as DuckDB split it


def check(sql: str) -> Checked:
    """The single read-only statement in `sql`, or `Refused` with the reason."""
    if not sql or not sql.strip():
        raise Refused("Enter a SELECT query.")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise Refused(f"DuckDB could not parse this: {_first_line(exc)}") from exc
    if not statements:
        raise Refused("Enter a SELECT query (only comments were given).")
    if len(statements) > 1:
        raise Refused(f"One statement at a time: this has {len(statements)} (separated by ';').")
    st = statements[0]
    if st.type not in ALLOWED_TYPES:
        name = st.type.name
        why = _TYPE_NAMES.get(name, f"{name} statements are not read-only queries")
        raise Refused(f"Only read-only SELECT queries run here: {why}.")
    tree = _syntax_tree(sql)
    _check_tree(tree)
    return Checked(sql=st.query)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _syntax_tree(sql: str) -> dict:
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    finally:
        con.close()
    tree = json.loads(raw)
    if tree.get("error"):
        raise Refused(f"DuckDB could not parse this: {tree.get('error_message', 'unknown error')}")
    return tree


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _check_tree(tree: dict) -> None:
    for node in _walk(tree):
        name = node.get("function_name")
        if isinstance(name, str):
            _check_function(name)
        if node.get("type") == "BASE_TABLE":
            _check_table(str(node.get("table_name", "")), str(node.get("schema_name", "")))


def _check_function(name: str) -> None:
    lowered = name.lower()
    if lowered in DENIED_FUNCTIONS or lowered.startswith(DENIED_PREFIXES):
        raise Refused(
            f"The function {name}() is refused: the console reads the platform's tables only, never files, "
            "the environment or SQL built from strings."
        )


def _check_table(table: str, schema: str) -> None:
    if any(m in table for m in PATH_MARKERS):
        raise Refused(f"'{table}' looks like a file or URL: the console reads the platform's tables only.")
    if schema and any(m in schema for m in PATH_MARKERS):
        raise Refused(f"'{schema}.{table}' looks like a file or URL: the console reads the platform's tables only.")
