"""`python -m llm.search "QUERY" [--kind trace|log|incident] [--service S] [--limit N]`: search by meaning.

Prints one JSON object per line, best first:
`{"kind", "id", "service", "time", "similarity", "text"}` (`id`: a trace id, log template id or
incident id; `time` ISO 8601 UTC). A bad query (empty, over 1,000 characters, control
characters) or a bad flag prints why on stderr and exits 2; nothing found prints nothing and
exits 0 (stderr says so). The model loads from the pinned wheel (sha256-checked), offline.
Uses the IVF index the indexer persisted when there is one (`--explain` says which search ran).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

import orjson

from observability import semantic_search
from observability.settings import get_settings
from observability.store import Store


def _time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if t.tzinfo is not None:
        t = (t - t.utcoffset()).replace(tzinfo=None)
    return t


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llm.search", description=__doc__.splitlines()[0])
    p.add_argument("query", help="what you are looking for, in your own words")
    p.add_argument("--kind", choices=semantic_search.KINDS, help="only traces, log templates or incidents")
    p.add_argument("--service", help="only items involving this service")
    p.add_argument("--limit", type=int, default=10, help="at most this many results (1-1000, default 10)")
    p.add_argument("--since", type=_time, help="only items at or after this time (ISO 8601, UTC if no offset)")
    p.add_argument("--until", type=_time, help="only items before this time")
    p.add_argument(
        "--min-similarity", type=float, default=None, help="cosine similarity threshold (default SEARCH_MIN_SIMILARITY)"
    )
    p.add_argument("--keyword", action="store_true", help="plain keyword search (ILIKE) instead, for comparison")
    p.add_argument(
        "--explain",
        action="store_true",
        help="say on stderr how it searched (index=ivf lists=.. probed=.. | index=exact)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = get_settings()
    try:
        query = semantic_search.check_query(args.query)
        filters = semantic_search.Filters(
            kind=args.kind,
            service=args.service,
            start=args.since,
            end=args.until,
            min_similarity=settings.search_min_similarity if args.min_similarity is None else args.min_similarity,
            limit=args.limit,
        )
    except semantic_search.BadQuery as exc:
        print(f"llm.search: {exc}", file=sys.stderr)
        return 2
    store = Store.from_settings(settings)
    if args.keyword:
        df = store.read(lambda con: semantic_search.keyword_search(con, query, filters))
    else:
        from observability import embedding_model

        embedder = embedding_model.load(threads=1)
        vector = embedder.encode([query])[0]
        probes = settings.search_index_probes or None  # the persisted IVF index, when the indexer built one
        df = store.read(lambda con: semantic_search.search(con, vector, filters, model=embedder.name, probes=probes))
    out = sys.stdout.buffer
    for record in semantic_search.as_records(df):
        out.write(orjson.dumps(record) + b"\n")
    out.flush()
    if args.explain:
        a = df.attrs
        how = f"index=ivf lists={a['lists']} probed={a['probed']}" if a.get("index") == "ivf" else "index=exact"
        print(f"llm.search: {how if not args.keyword else 'index=keyword'} results={len(df)}", file=sys.stderr)
    if df.empty:
        print("llm.search: no results (is `python -m llm.indexer` running? lower --min-similarity?)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
