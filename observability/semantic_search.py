"""Search by meaning over the indexed traces, log templates and incidents (DuckDB, no extension).

The indexer (`python -m llm.indexer`) stores one unit vector per distinct text in
`embedding_vectors` and one row per item in `embeddings`. A search embeds the query with the
same model, scores the distinct texts with `array_cosine_similarity` (DuckDB core; every text,
or with the persisted IVF index only those of the lists nearest the query), keeps
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
import pyarrow.compute as pc

from observability import tables, vector_index

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
EXACT, IVF = "exact", "ivf"  # how step 1 ran: `df.attrs["index"]` of a search's result


def search(
    con, vector: np.ndarray, filters: Filters, model: str | None = None, probes: int | None = None
) -> pd.DataFrame:
    """Items nearest to a unit query vector (columns RESULT_FIELDS + trace_id), best first.

    Two steps, because many items share one text: (1) the best distinct texts at or above the
    threshold by `array_cosine_similarity`, FIRST_TEXTS of them (x4 per round); (2) their items
    that pass the filters, best text first, newest first. A round that fills the limit, or that
    already took every text above the threshold, is the last. When the indexer has persisted an
    IVF index for `model` (observability.vector_index), step 1 scores only the vectors filed
    under the `probes` nearest lists (approximate); when filters (kind, service, time) leave too
    few items of those lists' texts, the next round probes x4 as many lists, up to all of them.
    No index: every vector is scored (exact).
    `df.attrs`: {"index": "ivf" | "exact", "lists": k, "probed": lists probed in the last round}.
    """
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vec.shape[0] != tables.EMBEDDING_DIM:
        raise ValueError(f"query vector has {vec.shape[0]} dimensions, expected {tables.EMBEDDING_DIM}")
    where, params = filters.where()
    centroids = vector_index.load(con, model)
    probe = vector_index.probes_for(centroids, probes) if centroids is not None else 0
    take = FIRST_TEXTS
    while True:
        lists = centroids.nearest(vec, probe) if centroids is not None and probe < len(centroids) else None
        hits = _best_texts(con, vec, model, float(filters.min_similarity), take, lists)
        con.register("_hits", hits)
        try:
            found = con.execute(_ITEMS_SQL.format(where=where, limit=int(filters.limit)), params).df()
        finally:
            con.unregister("_hits")
        found.attrs.update(
            index=EXACT if centroids is None else IVF,
            lists=len(centroids) if centroids is not None else 0,
            probed=len(lists) if lists is not None else len(centroids or ()),
        )
        if len(found) >= filters.limit or (hits.num_rows < take and (lists is None or where == "TRUE")):
            return found
        if hits.num_rows < take:
            probe *= 4  # the filters left too few items of the probed lists' texts: widen
        else:
            take *= 4


def _best_texts(con, vec: np.ndarray, model: str | None, min_similarity: float, take: int, lists) -> pa.Table:
    """Step 1: (text_id, similarity) of the `take` best texts, among the given lists' only if any."""
    conds, args = [], [vec.tolist()]
    if model:
        conds.append("model = ?")
        args.append(model)
    if lists is not None:
        # unfiled vectors (cluster_id NULL) are always scored, so nothing inserted is ever unreachable
        conds.append("(list_contains(?::INTEGER[], cluster_id) OR cluster_id IS NULL)")
        args.append(lists)
    # the threshold is applied to the top `take`, not in the scan: as a scan filter DuckDB would
    # score rows before the list filter removed them (same rows either way)
    sql = f"""
        SELECT text_id, array_cosine_similarity(embedding, ?::FLOAT[{tables.EMBEDDING_DIM}]) AS similarity
        FROM {tables.EMBEDDING_VECTORS} WHERE {" AND ".join(conds) or "TRUE"}
        ORDER BY similarity DESC, text_id LIMIT {int(take)}
    """
    top = con.sql(sql, params=args).to_arrow_table()
    return top.filter(pc.greater_equal(top.column("similarity"), min_similarity))


# the texts are read for the final rows only (reading every text would cost more than ranking)
_ITEMS_SQL = f"""
    WITH best AS (
        SELECT e.kind, e.item_id, e.service, e.time, h.similarity, e.trace_id, e.text_id
        FROM _hits h JOIN {tables.EMBEDDINGS} e ON e.text_id = h.text_id
        WHERE {{where}}
        ORDER BY h.similarity DESC, e.time DESC, e.kind, e.item_id
        LIMIT {{limit}}
    )
    SELECT e.kind, e.item_id AS id, e.service, e.time, e.similarity, v.text, e.trace_id
    FROM best e JOIN {tables.EMBEDDING_VECTORS} v ON v.text_id = e.text_id
    ORDER BY e.similarity DESC, e.time DESC, e.kind, e.item_id
"""


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
