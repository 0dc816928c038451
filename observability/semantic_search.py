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
import pyarrow as pa

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
FIRST_TEXTS = 32  # distinct texts taken per round; more rounds only when the filters leave too few items


def search(
    con, vector: np.ndarray, filters: Filters, model: str | None = None, index: VectorIndex | None = None
) -> pd.DataFrame:
    """Items nearest to a unit query vector (columns RESULT_FIELDS + trace_id), best first.

    Two steps, because many items share one text: (1) the best distinct texts at or above the
    threshold by `array_cosine_similarity`, FIRST_TEXTS of them (x4 per round); (2) their items
    that pass the filters, best text first, newest first. A round that fills the limit, or that
    already took every text above the threshold, is the last. With an `index` (a long-lived
    process over many vectors), step 1 is the index's: the probed lists only (approximate), scored
    by inner product in numpy (the vectors are unit length, so it is the cosine similarity).
    """
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vec.shape[0] != tables.EMBEDDING_DIM:
        raise ValueError(f"query vector has {vec.shape[0]} dimensions, expected {tables.EMBEDDING_DIM}")
    where, params = filters.where()
    model_sql = "AND model = ?" if model else ""
    texts_sql = f"""
        SELECT text_id, similarity FROM (
            SELECT text_id, array_cosine_similarity(embedding, ?::FLOAT[{tables.EMBEDDING_DIM}]) AS similarity
            FROM {tables.EMBEDDING_VECTORS} WHERE TRUE {model_sql}
        ) WHERE similarity >= ? ORDER BY similarity DESC, text_id LIMIT ?
    """
    # the texts are read for the final rows only (reading every text would cost more than ranking)
    items_sql = f"""
        WITH best AS (
            SELECT e.kind, e.item_id, e.service, e.time, h.similarity, e.trace_id, e.text_id
            FROM _hits h JOIN {tables.EMBEDDINGS} e ON e.text_id = h.text_id
            WHERE {where}
            ORDER BY h.similarity DESC, e.time DESC, e.kind, e.item_id
            LIMIT {int(filters.limit)}
        )
        SELECT e.kind, e.item_id AS id, e.service, e.time, e.similarity, v.text, e.trace_id
        FROM best e JOIN {tables.EMBEDDING_VECTORS} v ON v.text_id = e.text_id
        ORDER BY e.similarity DESC, e.time DESC, e.kind, e.item_id
    """
    take = FIRST_TEXTS
    while True:
        if index is not None:
            hits = index.nearest(vec, take, float(filters.min_similarity))
        else:
            args = [vec.tolist(), *([model] if model else []), float(filters.min_similarity), take]
            hits = con.sql(texts_sql, params=args).to_arrow_table()
        con.register("_hits", hits)
        try:
            found = con.execute(items_sql, params).df()
        finally:
            con.unregister("_hits")
        if len(found) >= filters.limit or hits.num_rows < take:
            return found
        take *= 4


class VectorIndex:
    """An in-memory inverted-file index (IVF) over `embedding_vectors`, for step 1 at scale.

    k-means (spherical, a few rounds on a sample) splits the vectors into ~sqrt(n) lists; a query
    scans the `probes` lists whose centroids are nearest, so ~probes/sqrt(n) of the vectors, and
    scores those vectors exactly. Approximate: a neighbour filed in a
    list that was not probed is missed (the bench prints recall against the exact search).
    Built from what the table held at build time; a long-lived reader rebuilds it now and then.
    """

    def __init__(
        self,
        text_ids: np.ndarray,
        vectors: np.ndarray,
        lists: int | None = None,
        probes: int | None = None,
        seed: int = 0,
    ) -> None:
        n = len(vectors)
        k = max(1, min(n, lists or int(np.sqrt(n))))
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, min(n, 64 * k), replace=False)]
        centroids = sample[rng.choice(len(sample), k, replace=False)].copy()
        for _ in range(5):
            owner = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, owner, sample)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids)
        owner = np.concatenate([np.argmax(vectors[i : i + 65536] @ centroids.T, axis=1) for i in range(0, n, 65536)])
        order = np.argsort(owner, kind="stable")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.vectors = np.ascontiguousarray(vectors[order], dtype=np.float32)
        self.text_ids = np.asarray(text_ids)[order]
        self.offsets = np.searchsorted(owner[order], np.arange(k + 1))
        self.probes = max(1, min(k, probes or int(np.ceil(k / 32))))

    def __len__(self) -> int:
        return len(self.text_ids)

    @classmethod
    def load(cls, con, model: str, **kwargs) -> VectorIndex:
        table = con.sql(
            f"SELECT text_id, embedding FROM {tables.EMBEDDING_VECTORS} WHERE model = ?", params=[model]
        ).to_arrow_table()
        vectors = table.column("embedding").combine_chunks().values.to_numpy().reshape(-1, tables.EMBEDDING_DIM)
        return cls(table.column("text_id").to_numpy(), vectors, **kwargs)

    def nearest(self, vector: np.ndarray, count: int, min_similarity: float) -> pa.Table:
        """(text_id, similarity) of the `count` best probed vectors at or above the threshold."""
        near = np.argsort(-(self.centroids @ vector))[: self.probes]
        spans = [(self.offsets[c], self.offsets[c + 1]) for c in near]
        rows = np.concatenate([np.arange(a, b) for a, b in spans])
        scores = np.concatenate([self.vectors[a:b] @ vector for a, b in spans])  # slices: no copy
        keep = scores >= min_similarity
        rows, scores = rows[keep], scores[keep]
        if len(rows) > count:
            top = np.argpartition(-scores, count)[:count]
            rows, scores = rows[top], scores[top]
        return pa.table({"text_id": self.text_ids[rows], "similarity": scores.astype(np.float64)})


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
