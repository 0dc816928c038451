"""A batch's span trees in arrays: each span's parent row, depth and self time (silver's context).

`observability.layers.ENRICH_SQL` is the definition: a recursive walk down from each trace's
roots and a gaps-and-islands union of each span's children's intervals, joined back on
(trace_id, span_id) strings. Here the ids become exact integer codes (Arrow's dictionary
encoding: no hash that could collide) and the joins become array lookups, so the tree costs a
few array passes per level instead of string hash joins (issue 17: the SQL was ~2.9 CPU-µs per
span, the largest part of a batch's layers). tests/test_span_tree.py checks both give the
same rows on fuzzed forests (duplicates, cycles, self-parents, missing parents, null ids).

The rules, as in the SQL:
- a *member* span has a trace id and a span id; only members are parents and children;
- a member's parent is the first member row with its trace id and its parent_span_id as span
  id (a span that names itself has none);
- depth: 0 for a member whose parent_span_id is null or names no member (a root), else the
  fewest steps down from a root (at most MAX_DEPTH); 0 when no root reaches it (a cycle) and
  for non-members;
- self time: the latency minus the union of its children's intervals, each clipped to it, not
  below 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MAX_DEPTH = 256  # a parent cycle in bad data stops here instead of walking for ever


@dataclass(frozen=True)
class SpanContext:
    parent_row: np.ndarray  # int64 row of each span's parent, -1 when it has none
    depth: np.ndarray  # int32
    self_time_ms: np.ndarray  # float64


def _codes(array: pa.Array) -> np.ndarray:
    """Dense int64 codes of a string column, -1 for null (exact: equal strings, equal codes)."""
    return pc.fill_null(pc.dictionary_encode(array).indices, -1).to_numpy().astype(np.int64)


def span_context(
    trace_id: pa.ChunkedArray | pa.Array,
    span_id: pa.ChunkedArray | pa.Array,
    parent_span_id: pa.ChunkedArray | pa.Array,
    start_us: np.ndarray,
    latency_ms: np.ndarray,
    max_depth: int = MAX_DEPTH,
) -> SpanContext:
    """Each row's parent row, depth and self time (see the module docstring for the rules)."""
    n = len(start_us)
    trace = _codes(_whole(trace_id))
    ids = _codes(pa.concat_arrays([_whole(span_id), _whole(parent_span_id)]))
    span, parent = ids[:n], ids[n:]
    latency = np.asarray(latency_ms, dtype=np.float64)
    start = np.asarray(start_us, dtype=np.int64)

    member = np.flatnonzero((trace >= 0) & (span >= 0))
    keys = (trace[member] << 32) | span[member]
    uniq, first, key_of = np.unique(keys, return_index=True, return_inverse=True)
    first_row = member[first]  # each key's first member row: the parent the others see

    # the member rows whose parent names another member of their trace
    has_parent_id = parent[member] >= 0
    wanted = np.where(has_parent_id, (trace[member] << 32) | np.maximum(parent[member], 0), -1)
    pos = np.minimum(np.searchsorted(uniq, wanted), max(len(uniq) - 1, 0))
    found = has_parent_id & (uniq[pos] == wanted) if len(uniq) else np.zeros(len(member), dtype=bool)
    linked = found & (parent[member] != span[member])
    parent_key = np.where(linked, pos, -1)

    parent_row = np.full(n, -1, dtype=np.int64)
    parent_row[member[linked]] = first_row[parent_key[linked]]

    depth_of_key = _depths(key_of, parent_key, ~found, len(uniq), max_depth)
    depth = np.zeros(n, dtype=np.int32)
    depth[member] = depth_of_key[key_of]

    covered_of_key = _covered(
        start, latency, member[linked], first_row[parent_key[linked]], parent_key[linked], len(uniq)
    )
    covered = np.zeros(n, dtype=np.float64)
    covered[member] = covered_of_key[key_of]
    self_time = np.maximum(latency - covered, 0.0)
    return SpanContext(parent_row, depth, self_time)


def _whole(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One string array (one dictionary for its codes)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], type=array.type)
    return array.cast(pa.string())


def _depths(key_of: np.ndarray, parent_key: np.ndarray, is_root: np.ndarray, n_keys: int, max_depth: int) -> np.ndarray:
    """Fewest steps from a root per key, level by level (0 where no root reaches it)."""
    depth = np.full(n_keys, -1, dtype=np.int32)
    depth[key_of[is_root]] = 0
    rows = np.flatnonzero(parent_key >= 0)
    child, par = key_of[rows], parent_key[rows]
    for level in range(1, max_depth + 1):
        open_ = depth[child] < 0
        child, par = child[open_], par[open_]
        reached = depth[par] == level - 1
        if not reached.any():
            break
        depth[child[reached]] = level
    return np.maximum(depth, 0)


def _covered(
    start_us: np.ndarray,
    latency: np.ndarray,
    child_row: np.ndarray,
    parent_row: np.ndarray,
    parent_key: np.ndarray,
    n_keys: int,
) -> np.ndarray:
    """Per key, the length of the union of its children's intervals clipped to its own, in ms."""
    if len(child_row) == 0:
        return np.zeros(n_keys, dtype=np.float64)
    s = np.maximum(start_us[child_row], start_us[parent_row]) / 1000.0
    e = np.minimum(
        start_us[child_row] / 1000.0 + latency[child_row], start_us[parent_row] / 1000.0 + latency[parent_row]
    )
    keep = e > s
    s, e, key = s[keep], e[keep], parent_key[keep]
    if len(s) == 0:
        return np.zeros(n_keys, dtype=np.float64)
    order = np.lexsort((e, s, key))
    s, e, key = s[order], e[order], key[order]
    new_key = np.r_[True, key[1:] != key[:-1]]
    running = pd.Series(e).groupby(key, sort=False).cummax().to_numpy()
    reach = np.r_[-np.inf, running[:-1]]
    island = new_key | (s > reach)
    starts = np.flatnonzero(island)
    hi = np.maximum.reduceat(e, starts)
    return np.bincount(key[starts], weights=hi - s[starts], minlength=n_keys)
