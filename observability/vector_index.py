"""The persisted IVF (inverted file) index over `embedding_vectors`, shared by every reader.

Why: scoring every vector costs ~1 ms per 1,000 vectors on one thread; at 100k-1M distinct texts
a query must look at a few per cent of them. The index lives in DuckDB, so the CLI (a fresh
process per query) and the dashboard use it alike and nothing is built on the query path:

- `embedding_centroids` holds ~sqrt(n) unit centroids per model, from spherical k-means on a
  sample (seeded: the same vectors give the same lists);
- `embedding_vectors.cluster_id` files each vector under its nearest centroid; training rewrites
  the model's rows in list order, so each list's vectors lie together in the file.

The indexer (`llm.indexer`, the only writer) trains it once a model has SEARCH_INDEX_MIN_VECTORS
vectors, files each new vector under its nearest centroid as it inserts it, and retrains when the
count has grown SEARCH_INDEX_RETRAIN_GROWTH times since training (the lists stay balanced).
A reader (`observability.semantic_search.search`) finds the `probes` centroids nearest the query
and scores with `array_cosine_similarity` only the vectors filed under them (and any not filed
yet, `cluster_id IS NULL`). No centroids for the model: the exact search over every vector.
Approximate: a neighbour filed under a list not probed is missed (bench/bench_search.py prints
recall@10 against the exact search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from observability import tables

SEED = 18  # k-means sample and initial centroids
KMEANS_ROUNDS = 8
SAMPLE_PER_LIST = 64  # k-means trains on at most this many vectors per list
_CHUNK = 65536  # vectors assigned per matrix product (bounds the temporary scores matrix)


@dataclass(frozen=True)
class Centroids:
    """One model's lists: centroid i is cluster id `ids[i]`."""

    ids: np.ndarray  # int32 (k,)
    vectors: np.ndarray  # float32 (k, EMBEDDING_DIM), unit rows
    trained_on: int

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, vector: np.ndarray, probes: int) -> list[int]:
        """Cluster ids of the `probes` centroids most similar to a unit vector, best first."""
        scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        return [int(c) for c in self.ids[np.argsort(-scores, kind="stable")[:probes]]]

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """The nearest centroid's cluster id of each vector (int32)."""
        return assign(vectors, self.vectors, self.ids)


def default_probes(lists: int) -> int:
    """Lists a query probes by default: 1 in 32 (~3 % of the vectors), at least 1."""
    return max(1, math.ceil(lists / 32))


def lists_for(count: int) -> int:
    """~sqrt(n) lists: a query's centroid scan and its lists' scan stay about the same size."""
    return max(1, min(count, int(math.sqrt(count))))


def load(con, model: str | None) -> Centroids | None:
    """The persisted centroids of `model`, or None (no index: search exactly)."""
    if not model:
        return None
    table = con.sql(
        f"SELECT cluster_id, centroid, trained_on FROM {tables.EMBEDDING_CENTROIDS} WHERE model = ? "
        "ORDER BY cluster_id",
        params=[model],
    ).to_arrow_table()
    if table.num_rows == 0:
        return None
    vectors = table.column("centroid").combine_chunks().values.to_numpy().reshape(-1, tables.EMBEDDING_DIM)
    return Centroids(
        table.column("cluster_id").to_numpy().astype(np.int32),
        np.ascontiguousarray(vectors, dtype=np.float32),
        int(table.column("trained_on")[0].as_py()),
    )


def probes_for(centroids: Centroids, probes: int | None) -> int:
    return max(1, min(len(centroids), probes or default_probes(len(centroids))))


# -- the writer's side (llm.indexer) --------------------------------------------------------------


def needs_training(count: int, trained_on: int | None, min_vectors: int, growth: float) -> bool:
    """Train when there is no index and enough vectors, or the count grew `growth` times since."""
    if count < min_vectors:
        return False
    return trained_on is None or count >= growth * max(trained_on, 1)


def kmeans(vectors: np.ndarray, k: int, seed: int = SEED, rounds: int = KMEANS_ROUNDS) -> np.ndarray:
    """Spherical k-means on a seeded sample of at most SAMPLE_PER_LIST * k vectors: k unit centroids."""
    n = len(vectors)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, min(n, SAMPLE_PER_LIST * k), replace=False))]
    centroids = sample[rng.choice(len(sample), k, replace=False)].astype(np.float32)
    for _ in range(rounds):
        owner = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, owner, sample)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        # an emptied list keeps its old centroid
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids).astype(np.float32)
    return np.ascontiguousarray(centroids)


def assign(vectors: np.ndarray, centroids: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Index (or id from `ids`) of each vector's nearest centroid, a chunk at a time."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int32)
    owner = np.concatenate(
        [np.argmax(vectors[i : i + _CHUNK] @ centroids.T, axis=1) for i in range(0, len(vectors), _CHUNK)]
    )
    return (owner if ids is None else ids[owner]).astype(np.int32)


def read_vectors(con, model: str) -> tuple[np.ndarray, np.ndarray]:
    """(text_ids, vectors) of every vector of `model`, by text id (the seeded sample is then reproducible)."""
    table = con.sql(
        f"SELECT text_id, embedding FROM {tables.EMBEDDING_VECTORS} WHERE model = ? ORDER BY text_id", params=[model]
    ).to_arrow_table()
    vectors = table.column("embedding").combine_chunks().values.to_numpy().reshape(-1, tables.EMBEDDING_DIM)
    return table.column("text_id").to_numpy(), np.ascontiguousarray(vectors, dtype=np.float32)


def train(text_ids: np.ndarray, vectors: np.ndarray, lists: int | None = None, seed: int = SEED):
    """Centroids and each vector's cluster id, ready for `save`."""
    centroids = kmeans(vectors, lists or lists_for(len(vectors)), seed)
    ids = np.arange(len(centroids), dtype=np.int32)
    trained = Centroids(ids, centroids, len(vectors))
    return trained, pa.table({"text_id": pa.array(text_ids, pa.int64()), "cluster_id": assign(vectors, centroids)})


def save(con, model: str, centroids: Centroids, assignment: pa.Table, now) -> None:
    """Inside the writer's transaction: replace the model's centroids and file every vector."""
    flat = pa.array(centroids.vectors.reshape(-1))
    table = pa.table(
        {
            "cluster_id": pa.array(centroids.ids, pa.int32()),
            "centroid": pa.FixedSizeListArray.from_arrays(flat, tables.EMBEDDING_DIM),
        }
    )
    con.execute(f"DELETE FROM {tables.EMBEDDING_CENTROIDS} WHERE model = ?", [model])
    con.register("_centroids", table)
    con.register("_assignment", assignment)
    try:
        con.execute(
            f"INSERT INTO {tables.EMBEDDING_CENTROIDS} (model, cluster_id, centroid, trained_on, trained_at) "
            f"SELECT ?, cluster_id, centroid::FLOAT[{tables.EMBEDDING_DIM}], ?, ? FROM _centroids",
            [model, centroids.trained_on, now],
        )
        # rewritten in list order rather than UPDATEd in place: a list's vectors then lie together
        # in the file, so a query fetches a few runs of rows instead of rows scattered over all of
        # it (vectors inserted after training are appended, in arrival order, until the next one)
        columns = "text_id, text, embedding, model, created_at, cluster_id"
        con.execute(
            f"CREATE TEMP TABLE _refiled AS SELECT v.text_id, v.text, v.embedding, v.model, v.created_at, "
            f"a.cluster_id FROM {tables.EMBEDDING_VECTORS} v JOIN _assignment a ON a.text_id = v.text_id "
            "WHERE v.model = ?",
            [model],
        )
        con.execute(
            f"DELETE FROM {tables.EMBEDDING_VECTORS} WHERE model = ? AND text_id IN (SELECT text_id FROM _refiled)",
            [model],
        )
        con.execute(
            f"INSERT INTO {tables.EMBEDDING_VECTORS} ({columns}) SELECT {columns} FROM _refiled "
            "ORDER BY cluster_id, text_id"
        )
        con.execute("DROP TABLE _refiled")
    finally:
        con.unregister("_centroids")
        con.unregister("_assignment")
