"""`python -m llm.indexer [--once]`: embeds traces, log templates and incidents for search by meaning.

Each cycle reads what is new and writes, in one transaction per source, the items
(`embeddings`) and the vectors of texts never seen before (`embedding_vectors`):

- traces: bronze Parquet files not indexed yet (`embedding_progress` lists the files
  done). Every trace they touch is re-read whole (its spans within
  SEARCH_TRACE_SLACK_SECONDS) and its summary text rebuilt, so a trace split across
  micro-batches ends up indexed whole. The span error messages become `log` items too.
- logs: `logs` rows since the newest indexed timestamp (minus the slack, re-reading is
  idempotent), one item per (service, severity, templated body).
- incidents: every incident whose text (summary, services, anomaly types, root cause) changed.

The search index: at the end of a cycle the indexer trains the persisted IVF index
(observability.vector_index) once there are SEARCH_INDEX_MIN_VECTORS vectors, and retrains it when
their count has grown SEARCH_INDEX_RETRAIN_GROWTH times; in between, each new vector is filed under
its nearest centroid as it is inserted, so readers never build anything.

The content cache: texts are keyed by a 64-bit hash; a text whose vector exists (for this
model) is never embedded again, so 1,000 traces that look alike cost one embedding.
`--once` indexes what is there, prints one line
`indexed traces=<n> logs=<n> incidents=<n> texts_embedded=<n> texts_cached=<n> seconds=<s>`
and exits 0. Without it the service loops every SEARCH_INDEX_INTERVAL_SECONDS and writes the
`indexer` heartbeat, and serves /metrics on METRICS_PORT_INDEXER (items written per kind,
texts embedded and cached, embedding CPU time, cycle durations); SIGTERM finishes the
cycle and exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from observability import bronze, metrics, search_text, tables, vector_index
from observability.logs import get_logger
from observability.memory import release_memory
from observability.run_loop import run_loop, stop_on_signals
from observability.settings import Settings, get_settings
from observability.store import Store, StoreBusy, StoreUnwritable, utcnow

log = get_logger(__name__)

LOGS_SOURCE = "logs"
MAX_FILES_PER_CYCLE = 500
# traces whose spans are read, summarised and embedded together (bounds the memory of a cycle)
TRACES_PER_CHUNK = 5_000
_SPAN_FIELDS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "endpoint",
    "status_code",
    "latency_ms",
    "error_message",
    "timestamp",
)


@dataclass
class IndexResult:
    traces: int = 0
    logs: int = 0
    incidents: int = 0
    texts_embedded: int = 0
    texts_cached: int = 0
    embed_seconds: float = 0.0
    seconds: float = 0.0
    files: int = 0

    def line(self) -> str:
        return (
            f"indexed traces={self.traces} logs={self.logs} incidents={self.incidents} "
            f"texts_embedded={self.texts_embedded} texts_cached={self.texts_cached} seconds={self.seconds:.2f}"
        )


@dataclass
class Items:
    """Items of one kind to upsert, with their texts."""

    kind: str
    rows: list[dict] = field(default_factory=list)

    def add(self, item_id: str, text: str, service, services, time, trace_id=None) -> None:
        self.rows.append(
            {
                "kind": self.kind,
                "item_id": item_id,
                "service": service,
                "services": list(services or []),
                "time": time,
                "text": text,
                "text_id": search_text.text_id(text),
                "trace_id": trace_id,
            }
        )


class Indexer:
    def __init__(self, settings: Settings, embedder=None, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store.from_settings(settings)
        self._embedder = embedder
        self._known: set[int] | None = None  # text ids with a vector for this model (the cache)
        self._centroids: vector_index.Centroids | None = None  # the persisted IVF lists, once loaded
        self._centroids_loaded = False

    # -- the model and its cache -------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from observability import embedding_model

            self._embedder = embedding_model.load_from_settings(self.settings)
        return self._embedder

    @property
    def model_name(self) -> str:
        from observability.embedding_model import MODEL_NAME

        return getattr(self._embedder, "name", None) or MODEL_NAME

    def known(self) -> set[int]:
        if self._known is None:
            rows = self.store.fetch_all(
                f"SELECT text_id FROM {tables.EMBEDDING_VECTORS} WHERE model = ?", [self.model_name]
            )
            self._known = {r[0] for r in rows}
        return self._known

    def embed_new(self, items: list[Items], result: IndexResult) -> pa.Table | None:
        """Vectors for the texts not in the cache (embedded once each), as an Arrow table."""
        texts: dict[int, str] = {}
        known = self.known()
        for group in items:
            for row in group.rows:
                if row["text_id"] not in known:
                    texts.setdefault(row["text_id"], row["text"])
        total = len({row["text_id"] for group in items for row in group.rows})
        result.texts_cached += total - len(texts)
        if not texts:
            return None
        started = time.process_time()
        vectors = self.embedder.encode(list(texts.values()))
        result.embed_seconds += time.process_time() - started
        result.texts_embedded += len(texts)
        centroids = self.centroids()
        clusters = centroids.assign(vectors) if centroids is not None else None
        return vector_table(list(texts), list(texts.values()), vectors, self.model_name, clusters)

    # -- the search index (observability.vector_index) ------------------------------------------
    def centroids(self) -> vector_index.Centroids | None:
        if not self._centroids_loaded:
            self._centroids = self.store.read(lambda con: vector_index.load(con, self.model_name))
            self._centroids_loaded = True
        return self._centroids

    def maintain_index(self) -> bool:
        """Train (or retrain) the IVF index when the vector count calls for it; True if it did."""
        s, centroids = self.settings, self.centroids()
        count = len(self.known())
        trained_on = centroids.trained_on if centroids is not None else None
        if not vector_index.needs_training(
            count, trained_on, s.search_index_min_vectors, s.search_index_retrain_growth
        ):
            return False
        started, cpu = time.monotonic(), time.process_time()
        text_ids, vectors = self.store.read(lambda con: vector_index.read_vectors(con, self.model_name))
        trained, assignment = vector_index.train(text_ids, vectors, lists=s.search_index_lists or None)
        self.store.write(lambda con: vector_index.save(con, self.model_name, trained, assignment, utcnow()))
        # fold the updated cluster_id column into the file: left as update chains in the WAL, the
        # readers' filter on it would not skip the unprobed rows' vectors
        self.store.write(lambda con: con.execute("CHECKPOINT"))
        self._centroids, self._centroids_loaded = trained, True
        log.info(
            "search index trained",
            vectors=len(vectors),
            lists=len(trained),
            previous_vectors=trained_on,
            seconds=round(time.monotonic() - started, 2),
            cpu_seconds=round(time.process_time() - cpu, 2),
        )
        return True

    # -- writing ---------------------------------------------------------------------
    def write(self, items: list[Items], vectors: pa.Table | None, progress: list[tuple]) -> None:
        rows = [r for group in items for r in group.rows]
        frame = pd.DataFrame(rows, columns=list(_ITEM_COLUMNS)) if rows else None
        now = utcnow()

        def work(con: duckdb.DuckDBPyConnection) -> None:
            if vectors is not None:
                con.register("_vectors", vectors)
                con.execute(
                    f"INSERT OR IGNORE INTO {tables.EMBEDDING_VECTORS} "
                    "(text_id, text, embedding, model, created_at, cluster_id) "
                    f"SELECT text_id, text, embedding::FLOAT[{tables.EMBEDDING_DIM}], model, ?, cluster_id "
                    "FROM _vectors",
                    [now],
                )
                con.unregister("_vectors")
            if frame is not None:
                con.register("_items", frame)
                con.execute(_UPSERT_SQL, [now])
                con.unregister("_items")
            if progress:
                con.executemany(
                    f"INSERT OR REPLACE INTO {tables.EMBEDDING_PROGRESS} (source, position, indexed_at) "
                    "VALUES (?, ?, ?)",
                    [(source, position, now) for source, position in progress],
                )

        self.store.write(work)
        if vectors is not None:
            self.known().update(vectors.column("text_id").to_pylist())

    def _commit(self, items: list[Items], progress: list[tuple], result: IndexResult) -> None:
        vectors = self.embed_new(items, result)
        self.write(items, vectors, progress)

    # -- sources -----------------------------------------------------------------------
    def index_traces(self, result: IndexResult, max_files: int = MAX_FILES_PER_CYCLE) -> None:
        """Index the traces the pending files touch, TRACES_PER_CHUNK traces at a time.

        Chunks bound the indexer's memory to one chunk's spans and texts (under load a cycle's
        files touch hundreds of thousands of traces); the files are marked done with the last
        chunk's write, so a crash between chunks only re-indexes (idempotently) what was done."""
        files = self.pending_files()[:max_files]
        if not files:
            return
        touched = self.traces_touched_by(files)
        chunks = _chunks(touched[0], TRACES_PER_CHUNK) if touched else [[]]
        progress = [(f"bronze:{f}", None) for f in files]
        for i, ids in enumerate(chunks):
            spans = self.spans_of_traces(ids, touched[1], touched[2]) if ids else _no_spans()
            traces, errors = trace_items(spans)
            del spans
            self._commit([traces, errors], progress if i == len(chunks) - 1 else [], result)
            result.traces += len(traces.rows)
            result.logs += len(errors.rows)
        result.files += len(files)

    def pending_files(self) -> list[str]:
        root = self.settings.bronze_dir
        on_disk = sorted(str(p) for p in Path(root).glob("date=*/hour=*/*.parquet")) if Path(root).is_dir() else []
        done = {
            r[0][len("bronze:") :]
            for r in self.store.fetch_all(
                f"SELECT source FROM {tables.EMBEDDING_PROGRESS} WHERE starts_with(source, 'bronze:')"
            )
        }
        return [f for f in on_disk if f not in done]

    def traces_touched_by(self, files: list[str]) -> tuple[list[str], object, object] | None:
        """(trace ids with a span in `files`, their first and last timestamp), None when none."""
        con = duckdb.connect(":memory:")
        try:
            ids, first, last = con.execute(
                "SELECT list(DISTINCT trace_id ORDER BY trace_id), min(timestamp), max(timestamp) "
                "FROM read_parquet(?, union_by_name=true) WHERE trace_id IS NOT NULL",
                [files],
            ).fetchone()
        finally:
            con.close()
        return (ids, first, last) if ids else None

    def spans_of_traces(self, ids: list[str], first, last) -> pd.DataFrame:
        """Every span (within the slack of [first, last]) of the traces `ids`, only the columns used."""
        slack = timedelta(seconds=self.settings.search_trace_slack_seconds)
        return bronze.read_events(
            self.settings.bronze_dir,
            first - slack,
            last + slack,
            "list_contains(?, trace_id)",
            [ids],
            columns=_SPAN_FIELDS,
        )

    def spans_of_traces_in(self, files: list[str]) -> pd.DataFrame:
        """Every span (within the slack) of each trace that has a span in `files`."""
        touched = self.traces_touched_by(files)
        return self.spans_of_traces(*touched) if touched else _no_spans()

    def index_logs(self, result: IndexResult) -> None:
        row = self.store.fetch_one(f"SELECT position FROM {tables.EMBEDDING_PROGRESS} WHERE source = ?", [LOGS_SOURCE])
        since = row[0] - timedelta(seconds=self.settings.search_trace_slack_seconds) if row and row[0] else None
        df = self.store.fetch_df(
            f"""SELECT service, severity_text, body, max(timestamp) AS last_seen,
                       arg_max(trace_id, timestamp) AS trace_id
                FROM {tables.LOGS} WHERE body IS NOT NULL {"AND timestamp >= ?" if since else ""}
                GROUP BY ALL""",
            [since] if since else None,
        )
        if df.empty:
            return
        items = log_items(df)
        self._commit([items], [(LOGS_SOURCE, pd.Timestamp(df["last_seen"].max()).to_pydatetime())], result)
        result.logs += len(items.rows)

    def index_incidents(self, result: IndexResult) -> None:
        df = self.store.fetch_df(_INCIDENTS_SQL)
        if df.empty:
            return
        items = incident_items(df)
        current = dict(
            self.store.fetch_all(f"SELECT item_id, text_id FROM {tables.EMBEDDINGS} WHERE kind = 'incident'")
        )
        items.rows = [r for r in items.rows if current.get(r["item_id"]) != r["text_id"]]
        if items.rows:
            self._commit([items], [], result)
        result.incidents += len(items.rows)

    # -- the cycle ---------------------------------------------------------------------
    def cycle(self, max_files: int = MAX_FILES_PER_CYCLE) -> IndexResult:
        started = time.monotonic()
        result = IndexResult()
        self.index_traces(result, max_files)
        self.index_logs(result)
        self.index_incidents(result)
        self.maintain_index()
        if result.files or result.texts_embedded:
            release_memory()  # the batch's spans and texts are gone: give their pages back
        result.seconds = time.monotonic() - started
        if result.traces or result.logs or result.incidents:
            log.info("indexed", **{k: v for k, v in result.__dict__.items()})
        return result

    def run_once(self) -> IndexResult:
        """Index everything there is (all pending bronze files, in cycles), then return the totals."""
        total = IndexResult()
        started = time.monotonic()
        while True:
            r = self.cycle()
            for k in ("traces", "logs", "incidents", "texts_embedded", "texts_cached", "embed_seconds", "files"):
                setattr(total, k, getattr(total, k) + getattr(r, k))
            if r.files < MAX_FILES_PER_CYCLE:
                break
        total.seconds = time.monotonic() - started
        return total

    def heartbeat(self) -> None:
        self.store.heartbeat(tables.INDEXER_HEARTBEAT, f"vectors={len(self.known())}")

    def run_forever(self, stop) -> int:
        metrics.serve(metrics.INDEXER, self.settings)
        return run_loop(
            metrics.instrumented(metrics.INDEXER, self.cycle, observe),
            self.settings.search_index_interval_seconds,
            stop=stop,
            expected=(StoreBusy, StoreUnwritable, duckdb.IOException),
            heartbeat=self.heartbeat,
            logger=log,
        )


def observe(result: IndexResult) -> None:
    """A cycle's figures as metrics: items written per kind, texts embedded or cached, embedding CPU time."""
    for kind in ("traces", "logs", "incidents"):
        metrics.record_batch(metrics.INDEXER, kind=kind.rstrip("s"), rows_out=getattr(result, kind))
    metrics.SEARCH_TEXTS.labels("embedded").inc(result.texts_embedded)
    metrics.SEARCH_TEXTS.labels("cached").inc(result.texts_cached)
    metrics.SEARCH_EMBED_SECONDS.inc(result.embed_seconds)
    metrics.EVENTS_IN.labels(metrics.INDEXER, "bronze_file").inc(result.files)


_ITEM_COLUMNS = ("kind", "item_id", "service", "services", "time", "text", "text_id", "trace_id")
_UPSERT_SQL = f"""
INSERT INTO {tables.EMBEDDINGS} (kind, item_id, service, services, time, text_id, trace_id, updated_at)
SELECT kind, item_id, service, services::VARCHAR[], time, text_id, trace_id, ? FROM _items
ON CONFLICT (kind, item_id) DO UPDATE SET
    service = excluded.service,
    services = excluded.services,
    text_id = excluded.text_id,
    -- a log template keeps its newest time and trace; a trace or incident takes the new row
    trace_id = CASE WHEN excluded.kind <> 'log' OR excluded.time >= {tables.EMBEDDINGS}.time
                    THEN excluded.trace_id ELSE {tables.EMBEDDINGS}.trace_id END,
    time = CASE WHEN excluded.kind = 'log' THEN greatest({tables.EMBEDDINGS}.time, excluded.time)
                ELSE excluded.time END,
    updated_at = excluded.updated_at
"""

_INCIDENTS_SQL = f"""
WITH latest AS (
    SELECT incident_id, summary FROM {tables.INCIDENT_SUMMARIES}
    QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY created_at DESC) = 1
)
SELECT i.id, i.service, i.started_at, i.root_cause_service, i.related_services,
       (SELECT list(DISTINCT a.anomaly_type ORDER BY a.anomaly_type) FROM {tables.ANOMALIES} a
         WHERE a.service = i.service AND a.window_start >= i.started_at
           AND a.window_start < coalesce(i.ended_at, i.updated_at) + INTERVAL 1 MINUTE) AS types,
       l.summary
FROM {tables.INCIDENTS} i LEFT JOIN latest l ON l.incident_id = i.id
"""


def vector_table(
    text_ids: list[int], texts: list[str], vectors: np.ndarray, model: str, clusters: np.ndarray | None = None
) -> pa.Table:
    """Rows for `embedding_vectors`; `clusters`: each vector's IVF list (None: no index yet)."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table(
        {
            "text_id": pa.array(text_ids, pa.int64()),
            "text": pa.array(texts, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, tables.EMBEDDING_DIM),
            "model": pa.array([model] * len(texts), pa.string()),
            "cluster_id": pa.array(clusters, pa.int32()) if clusters is not None else pa.nulls(len(texts), pa.int32()),
        }
    )


def _no_spans() -> pd.DataFrame:
    return pd.DataFrame(columns=list(_SPAN_FIELDS))


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _records(spans: pd.DataFrame) -> dict[str, list[dict]]:
    by_trace: dict[str, list[dict]] = {}
    cols = {c: spans[c].tolist() for c in _SPAN_FIELDS if c in spans}
    n = len(spans)
    for i in range(n):
        span = {c: v[i] for c, v in cols.items()}
        by_trace.setdefault(span["trace_id"], []).append(span)
    return by_trace


def trace_items(spans: pd.DataFrame) -> tuple[Items, Items]:
    """A `trace` item per trace and a `log` item per templated span error message."""
    traces, errors = Items("trace"), Items("log")
    latest: dict[str, dict] = {}
    for trace_id, trace_spans in _records(spans).items():
        summary = search_text.trace_text(trace_spans)
        traces.add(trace_id, summary["text"], summary["service"], summary["services"], summary["time"], trace_id)
        for s in trace_spans:
            msg = s.get("error_message")
            if not isinstance(msg, str) or not msg.strip():
                continue
            text = search_text.error_message_text(s["service"], s.get("endpoint"), s.get("status_code"), msg)
            seen = latest.get(text)
            if seen is None or s["timestamp"] > seen["time"]:
                latest[text] = {"service": s["service"], "time": s["timestamp"], "trace_id": trace_id}
    for text, e in latest.items():
        ts = pd.Timestamp(e["time"]).to_pydatetime()
        errors.add(
            f"{search_text.text_id(text) & (2**64 - 1):016x}", text, e["service"], [e["service"]], ts, e["trace_id"]
        )
    return traces, errors


def log_items(df: pd.DataFrame) -> Items:
    """One `log` item per (service, severity, templated body), with its newest time and trace."""
    latest: dict[str, dict] = {}
    for row in df.itertuples(index=False):
        text = search_text.log_text(row.service, row.severity_text, row.body)
        seen = latest.get(text)
        if seen is None or row.last_seen > seen["time"]:
            trace = row.trace_id if isinstance(row.trace_id, str) and row.trace_id else None
            latest[text] = {"service": row.service, "time": row.last_seen, "trace_id": trace}
    items = Items("log")
    for text, e in latest.items():
        ts = pd.Timestamp(e["time"]).to_pydatetime()
        items.add(
            f"{search_text.text_id(text) & (2**64 - 1):016x}", text, e["service"], [e["service"]], ts, e["trace_id"]
        )
    return items


def incident_items(df: pd.DataFrame) -> Items:
    items = Items("incident")
    for row in df.itertuples(index=False):
        related = [s for s in (row.related_services if row.related_services is not None else []) if s]
        types = list(row.types) if row.types is not None else []
        summary = row.summary if isinstance(row.summary, str) else None
        root = row.root_cause_service if isinstance(row.root_cause_service, str) else None
        text = search_text.incident_text(row.service, types, root, related, summary)
        services = list(dict.fromkeys([row.service, *related, *([root] if root else [])]))
        items.add(row.id, text, row.service, services, pd.Timestamp(row.started_at).to_pydatetime())
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm.indexer", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="index what is there, print a summary line, exit")
    args = parser.parse_args(argv)
    settings = get_settings()
    indexer = Indexer(settings)
    indexer.store.migrate()
    if not args.once:
        indexer.run_forever(stop_on_signals())
        return 0
    result = indexer.run_once()
    indexer.heartbeat()
    print(result.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
