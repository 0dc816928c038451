"""Lay out the spans of one trace as a waterfall (pure; no Streamlit, no Plotly).

A span's `timestamp` is its start and `latency_ms` its duration. Rows come in
depth-first call order (children under their parent, siblings by start), so
the waterfall reads like the call tree. Spans whose parent is missing from the
bronze data (sampled away, or outside the time slice read) become roots rather
than being dropped.
"""

from __future__ import annotations

import pandas as pd

WATERFALL_COLUMNS = [
    "order",
    "depth",
    "label",
    "service",
    "endpoint",
    "span_id",
    "parent_span_id",
    "start_ms",
    "duration_ms",
    "status_code",
    "error_message",
]


def waterfall_rows(spans: pd.DataFrame) -> pd.DataFrame:
    if spans is None or spans.empty:
        return pd.DataFrame(columns=WATERFALL_COLUMNS)
    df = spans.copy()
    df["timestamp"] = pd.to_datetime(df["timestamp"])
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    t0 = df["timestamp"].min()
    df["start_ms"] = (df["timestamp"] - t0).dt.total_seconds() * 1000.0
    df["duration_ms"] = pd.to_numeric(df["latency_ms"], errors="coerce").fillna(0.0)
    # Spans without an id still get a unique key so they can be drawn.
    df["_key"] = [sid if isinstance(sid, str) and sid else f"_row{i}" for i, sid in enumerate(df["span_id"])]
    df = df.drop_duplicates("_key", keep="first").reset_index(drop=True)
    keys = set(df["_key"])

    children: dict[str, list[int]] = {}
    roots: list[int] = []
    for i, parent in enumerate(df["parent_span_id"]):
        if isinstance(parent, str) and parent in keys and parent != df.at[i, "_key"]:
            children.setdefault(parent, []).append(i)
        else:
            roots.append(i)

    ordered: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack = [(i, 0) for i in reversed(roots)]
    while stack:
        i, depth = stack.pop()
        if i in seen:  # a cycle in bad data must not loop forever
            continue
        seen.add(i)
        ordered.append((i, depth))
        for child in reversed(children.get(df.at[i, "_key"], [])):
            stack.append((child, depth + 1))
    # Anything unreachable (only possible with cycles) still shows, at depth 0.
    ordered += [(i, 0) for i in range(len(df)) if i not in seen]

    rows = []
    for order, (i, depth) in enumerate(ordered):
        r = df.loc[i]
        endpoint = r.get("endpoint") or ""
        rows.append(
            {
                "order": order,
                "depth": depth,
                "label": f"{order + 1:>2}. {'· ' * depth}{r['service']} {endpoint}".rstrip(),
                "service": r["service"],
                "endpoint": endpoint,
                "span_id": r.get("span_id"),
                "parent_span_id": r.get("parent_span_id"),
                "start_ms": float(r["start_ms"]),
                "duration_ms": float(r["duration_ms"]),
                "status_code": r.get("status_code"),
                "error_message": r.get("error_message"),
            }
        )
    return pd.DataFrame(rows, columns=WATERFALL_COLUMNS)
