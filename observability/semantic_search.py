"""Search by meaning over the indexed traces, log templates and incidents (DuckDB, no extension).

The indexer (`python -m llm.indexer`) stores one unit vector per distinct text in
`embedding_vectors` and one row per item in `embeddings`. A search embeds the query with the
same model, scores every distinct text with `array_cosine_similarity` (DuckDB core), keeps
those at or above the threshold, joins the items and applies the filters (kind, service,
time range), best first (ties: newest first). Shared by the CLI (`python -m llm.search`) and
the dashboard, so both rank alike.

Queries are checked first (`check_query`): empty, over MAX_QUERY_CHARS or holding control
characters is a `BadQuery` with a message saying which.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from observability import tables

KINDS = ("trace", "log", "incident")
MAX_QUERY_CHARS = 1000  # the model reads ~256 tokens; a longer query is a paste, not a question
MAX_LIMIT = 1000
RESULT_FIELDS = ("kind", "id", "service", "time", "similarity", "text")


class BadQuery(ValueError):
    """A query that cannot be searched; the message says why, for the user."""


def check_query(query) -> str:
    """The query, whitespace folded, or BadQuery (empty, too long, control characters)."""
    if not isinstance(query, str):
        raise BadQuery("the query must be text")
    if len(query) > MAX_QUERY_CHARS:
        raise BadQuery(f"the query is {len(query):,} characters long; at most {MAX_QUERY_CHARS:,} are allowed")
    for pos, ch in enumerate(query):
        if ch in "\t\n\r":
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch not in "\u200d":
            raise BadQuery(
                f"the query contains a control character (U+{ord(ch):04X} at position {pos}); type plain text"
            )
    folded = " ".join(query.split())
    if not folded:
        raise BadQuery("the query is empty: type what you are looking for, e.g. 'payments timing out'")
    return folded


@dataclass(frozen=True)
class Filters:
    kind: str | None = None
    service: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    min_similarity: float = 0.25
    limit: int = 20

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise BadQuery(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 1 <= int(self.limit) <= MAX_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
        if not -1.0 <= float(self.min_similarity) <= 1.0:
            raise BadQuery("the similarity threshold must be between -1 and 1")

    def where(self, alias: str = "e") -> tuple[str, list]:
        """SQL conditions on the items table and their parameters."""
        sql, params = [], []
        if self.kind:
            sql.append(f"{alias}.kind = ?")
            params.append(self.kind)
        if self.service:
            sql.append(f"({alias}.service = ? OR list_contains({alias}.services, ?))")
            params += [self.service, self.service]
        if self.start is not None:
            sql.append(f"{alias}.time >= ?")
            params.append(self.start)
        if self.end is not None:
            sql.append(f"{alias}.time < ?")
            params.append(self.end)
        return (" AND ".join(sql) or "TRUE"), params


_COLUMNS = "e.kind, e.item_id AS id, e.service, e.time, {score} AS similarity, v.text, e.trace_id"


def search(con, vector: np.ndarray, filters: Filters, model: str | None = None) -> pd.DataFrame:
    """Items nearest to a unit query vector (columns RESULT_FIELDS + trace_id), best first."""
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vec.shape[0] != tables.EMBEDDING_DIM:
        raise ValueError(f"query vector has {vec.shape[0]} dimensions, expected {tables.EMBEDDING_DIM}")
    where, params = filters.where()
    model_sql = "AND model = ?" if model else ""
    sql = f"""
        WITH hits AS (
            SELECT text_id, text, similarity FROM (
                SELECT text_id, text,
                       array_cosine_similarity(embedding, ?::FLOAT[{tables.EMBEDDING_DIM}]) AS similarity
                FROM {tables.EMBEDDING_VECTORS} WHERE TRUE {model_sql}
            ) WHERE similarity >= ?
        )
        SELECT {_COLUMNS.format(score="v.similarity")}
        FROM hits v JOIN {tables.EMBEDDINGS} e ON e.text_id = v.text_id
        WHERE {where}
        ORDER BY similarity DESC, e.time DESC, e.kind, e.item_id
        LIMIT {int(filters.limit)}
    """
    args = [vec.tolist(), *([model] if model else []), float(filters.min_similarity), *params]
    return con.execute(sql, args).df()


_WORD = re.compile(r"[a-z0-9]{3,}")
_STOP = {"the", "and", "for", "are", "was", "with", "from", "not", "but", "has", "have", "its", "all", "any"}


def keywords(query: str) -> list[str]:
    return [w for w in dict.fromkeys(_WORD.findall(query.lower())) if w not in _STOP]


def keyword_search(con, query: str, filters: Filters) -> pd.DataFrame:
    """The plain baseline: items whose text contains the query's words (ILIKE), most words first.

    `similarity` is the share of the query's words found; no model involved."""
    words = keywords(query)
    if not words:
        return pd.DataFrame(columns=[*RESULT_FIELDS, "trace_id"])
    score = " + ".join("CASE WHEN v.text ILIKE ? THEN 1 ELSE 0 END" for _ in words)
    where, params = filters.where()
    sql = f"""
        SELECT {_COLUMNS.format(score=f"({score}) / {len(words)}.0")}
        FROM {tables.EMBEDDING_VECTORS} v JOIN {tables.EMBEDDINGS} e ON e.text_id = v.text_id
        WHERE {where} AND ({score}) > 0
        ORDER BY similarity DESC, e.time DESC, e.kind, e.item_id
        LIMIT {int(filters.limit)}
    """
    likes = [f"%{w}%" for w in words]
    return con.execute(sql, [*likes, *params, *likes]).df()


def as_records(df: pd.DataFrame) -> list[dict]:
    """Result rows as the CLI prints them: {kind, id, service, time (ISO 8601 UTC), similarity, text}."""
    out = []
    for row in df.itertuples(index=False):
        t = pd.Timestamp(row.time)
        out.append(
            {
                "kind": row.kind,
                "id": row.id,
                "service": None if row.service is None or pd.isna(row.service) else row.service,
                "time": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
                "similarity": round(float(row.similarity), 4),
                "text": row.text,
            }
        )
    return out
