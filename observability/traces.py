"""Trace analysis: the span tree, self time, the critical path and findings (pure functions).

A trace arrives as bronze span rows (`timestamp` = start, `latency_ms` = duration,
`span_id`, `parent_span_id`, ...). Everything here is plain Python over those rows,
so the dashboard, the LLM facts or a notebook can reuse it, and it is tested on
hand-built trees.

- `build_tree`: the span tree. Spans whose parent is missing (sampled away, not yet
  arrived, outside the slice read) are orphans; when a trace has orphans or several
  roots they all hang under one synthetic root spanning the trace, so nothing is
  dropped and the tree has one root. Clock skew is adjusted as Jaeger's adjuster does:
  a child on another host (the `host` / `host.name` attribute, else its service) that
  does not fit inside its parent, and is not longer than it, is shifted to the centre
  of the parent; its same-host descendants move with it.
- `self_times`: a span's exclusive time, its duration minus the union of its
  children's intervals (clamped to the span).
- `critical_path`: Jaeger's algorithm. From the root, recurse into the last-finishing
  child; when a span has no child left, walk back to its parent, continuing with the
  children that finished before the returning child started. Children overflowing
  their parent are truncated to it (Jaeger's `sanitizeOverFlowingChildren`).
- Findings (`analyse`): bottlenecks (self time over 20 % of the trace), N+1 patterns
  (many sibling calls to the same downstream endpoint or database statement),
  sequential sibling calls that could run in parallel (with the time that would save),
  and the error origin (the deepest failed span whose children all succeeded).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SYNTHETIC_ROOT_ID = "(trace)"
FAILED_STATUS = 500  # status_code >= this is a failed span (as the metrics count errors)
BOTTLENECK_SHARE = 0.20  # self time over this share of the trace duration
N_PLUS_ONE_MIN_CALLS = 3  # this many sibling calls to one endpoint / statement
PARALLEL_MIN_SAVING_MS = 1.0  # a sequential run saving less than this is not reported
HOST_ATTRIBUTES = ("host.name", "host")  # the clock a span was timed by (Jaeger: the process's host)
DB_STATEMENT_ATTRIBUTES = ("db.query.text", "db.statement")


@dataclass
class Span:
    """One span of the tree; times in epoch milliseconds (start after skew adjustment)."""

    span_id: str
    parent_id: str | None  # the parent in the tree (None: the root)
    service: str
    endpoint: str
    start_ms: float
    duration_ms: float
    status_code: int | None = None
    error_message: str | None = None
    kind: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    recorded_parent_id: str | None = None  # the parent_span_id the span carried
    skew_ms: float = 0.0  # shift applied by the clock-skew adjustment
    orphan: bool = False  # its recorded parent is not in the trace
    synthetic: bool = False  # the root added above orphans / several roots
    depth: int = 0
    children: list[str] = field(default_factory=list)  # by start time

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms

    @property
    def failed(self) -> bool:
        return self.status_code is not None and self.status_code >= FAILED_STATUS

    @property
    def host(self) -> str:
        for key in HOST_ATTRIBUTES:
            value = self.attributes.get(key)
            if value:
                return str(value)
        return self.service

    @property
    def db_statement(self) -> str | None:
        for key in DB_STATEMENT_ATTRIBUTES:
            value = self.attributes.get(key)
            if value:
                return str(value)
        return None


@dataclass
class TraceTree:
    root_id: str
    spans: dict[str, Span]
    order: list[str]  # depth first, children by start: the waterfall's rows

    @property
    def root(self) -> Span:
        return self.spans[self.root_id]

    def children(self, span_id: str) -> list[Span]:
        return [self.spans[c] for c in self.spans[span_id].children]

    def real_spans(self) -> list[Span]:
        """The recorded spans in waterfall order (without the synthetic root)."""
        return [self.spans[s] for s in self.order if not self.spans[s].synthetic]

    @property
    def start_ms(self) -> float:
        return self.root.start_ms

    @property
    def duration_ms(self) -> float:
        return self.root.duration_ms


# --- building the tree ---------------------------------------------------------------
def _ms(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive = UTC wall time
            from datetime import UTC

            value = value.replace(tzinfo=UTC)
        return value.timestamp() * 1000.0
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return _ms(value.to_pydatetime())
    return float(value)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text or None


def _attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _status(value: Any) -> int | None:
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return int(value)
    except (TypeError, ValueError):
        return None


def _span_from_row(row: Mapping[str, Any], index: int) -> Span:
    duration = row.get("latency_ms", row.get("duration_ms"))
    duration = 0.0 if duration is None or (isinstance(duration, float) and math.isnan(duration)) else float(duration)
    parent = _text(row.get("parent_span_id"))
    return Span(
        span_id=_text(row.get("span_id")) or f"(span {index})",
        parent_id=parent,
        recorded_parent_id=parent,
        service=_text(row.get("service")) or "unknown",
        endpoint=_text(row.get("endpoint")) or "",
        start_ms=_ms(row.get("timestamp", row.get("start_ms"))),
        duration_ms=max(0.0, duration),
        status_code=_status(row.get("status_code")),
        error_message=_text(row.get("error_message")),
        kind=_text(row.get("kind")),
        attributes=_attributes(row.get("attributes")),
    )


def build_tree(rows: Iterable[Mapping[str, Any]]) -> TraceTree:
    """The span tree of one trace's rows (raises ValueError on no rows)."""
    spans: dict[str, Span] = {}
    for i, row in enumerate(rows):
        span = _span_from_row(row, i)
        spans.setdefault(span.span_id, span)  # a repeated span id: the first one wins
    if not spans:
        raise ValueError("a trace needs at least one span")
    roots = _link(spans)
    if len(roots) == 1 and not spans[roots[0]].orphan:
        root_id = roots[0]
    else:
        root_id = _add_synthetic_root(spans, roots)
    _adjust_skew(spans, root_id)
    _sort_children(spans)  # by the adjusted starts: the order the findings reason about
    if spans[root_id].synthetic:  # its span follows the adjusted children
        _fit_synthetic_root(spans, root_id)
    order = _depth_first(spans, root_id)
    return TraceTree(root_id=root_id, spans=spans, order=order)


def _link(spans: dict[str, Span]) -> list[str]:
    """Attach each span to its parent; returns the top-level span ids (roots and orphans).
    A parent cycle in bad data is broken at the span that closes it."""
    roots: list[str] = []
    for span in spans.values():
        parent = span.parent_id
        if parent is None or parent == span.span_id:
            span.parent_id = None
            roots.append(span.span_id)
        elif parent not in spans:
            span.parent_id = None
            span.orphan = True
            roots.append(span.span_id)
    for span in spans.values():
        if span.parent_id is not None and _closes_cycle(spans, span):
            span.parent_id = None
            span.orphan = True
            roots.append(span.span_id)
    for span in spans.values():
        if span.parent_id is not None:
            spans[span.parent_id].children.append(span.span_id)
    return roots


def _closes_cycle(spans: dict[str, Span], span: Span) -> bool:
    seen = {span.span_id}
    parent = span.parent_id
    while parent is not None:
        if parent in seen:
            return True
        seen.add(parent)
        parent = spans[parent].parent_id
    return False


def _add_synthetic_root(spans: dict[str, Span], top: list[str]) -> str:
    root = Span(
        span_id=SYNTHETIC_ROOT_ID,
        parent_id=None,
        service="(trace)",
        endpoint="(missing or several roots)",
        start_ms=0.0,
        duration_ms=0.0,
        synthetic=True,
        children=list(top),
    )
    for span_id in top:
        spans[span_id].parent_id = SYNTHETIC_ROOT_ID
    spans[SYNTHETIC_ROOT_ID] = root
    return SYNTHETIC_ROOT_ID


def _fit_synthetic_root(spans: dict[str, Span], root_id: str) -> None:
    kids = [spans[c] for c in spans[root_id].children]
    start = min(k.start_ms for k in kids)
    spans[root_id].start_ms = start
    spans[root_id].duration_ms = max(k.end_ms for k in kids) - start


def _sort_children(spans: dict[str, Span]) -> None:
    for span in spans.values():
        span.children.sort(key=lambda c: (spans[c].start_ms, c))


def _depth_first(spans: dict[str, Span], root_id: str) -> list[str]:
    order: list[str] = []
    stack = [(root_id, 0)]
    while stack:
        span_id, depth = stack.pop()
        spans[span_id].depth = depth
        order.append(span_id)
        stack.extend((c, depth + 1) for c in reversed(spans[span_id].children))
    return order


def skew_of(child: Span, parent: Span) -> float:
    """Jaeger's correction for a child timed by another clock: 0 when it fits inside the
    parent or is longer than it (nothing to align), else the shift to centre it in the parent."""
    if child.duration_ms > parent.duration_ms:
        return 0.0
    if parent.start_ms <= child.start_ms and child.end_ms <= parent.end_ms:
        return 0.0
    latency = (parent.duration_ms - child.duration_ms) / 2.0
    return parent.start_ms + latency - child.start_ms


def _adjust_skew(spans: dict[str, Span], root_id: str) -> None:
    """Top-down: a child on another host gets its own skew against its (adjusted) parent;
    a child on the parent's host inherits the parent's skew (same clock)."""
    stack = [(c, 0.0) for c in spans[root_id].children]
    root = spans[root_id]
    while stack:
        span_id, inherited = stack.pop()
        span = spans[span_id]
        parent = spans[span.parent_id] if span.parent_id else None
        span.start_ms += inherited
        skew = inherited
        if parent is not None and not parent.synthetic and span.host != parent.host:
            extra = skew_of(span, parent)
            span.start_ms += extra
            skew += extra
        span.skew_ms = skew
        stack.extend((c, skew) for c in span.children)
    root.skew_ms = 0.0


# --- self time and the critical path --------------------------------------------------
def clamped_intervals(tree: TraceTree) -> dict[str, tuple[float, float] | None]:
    """Each span's interval truncated to its parent's (clamped) interval; None for a child
    entirely outside its parent (Jaeger drops those from the critical path)."""
    out: dict[str, tuple[float, float] | None] = {}
    for span_id in tree.order:  # parents before children
        span = tree.spans[span_id]
        interval: tuple[float, float] | None = (span.start_ms, span.end_ms)
        if span.parent_id is not None:
            bound = out.get(span.parent_id)
            if bound is None:
                interval = None
            else:
                lo, hi = max(span.start_ms, bound[0]), min(span.end_ms, bound[1])
                interval = (lo, hi) if lo < hi or (lo == hi and span.duration_ms == 0) else None
        out[span_id] = interval
    return out


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for lo, hi in sorted(intervals):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


def self_times(tree: TraceTree) -> dict[str, float]:
    """Exclusive time per span: its duration not covered by any child."""
    clamp = clamped_intervals(tree)
    out = {}
    for span_id, span in tree.spans.items():
        own = clamp.get(span_id) or (span.start_ms, span.end_ms)
        covered = [clamp[c] for c in span.children if clamp.get(c) is not None]
        out[span_id] = max(0.0, (own[1] - own[0]) - _union_length(covered))
    return out


@dataclass(frozen=True)
class Section:
    """A stretch of the critical path: `span_id` is the one doing the work in [start_ms, end_ms)."""

    span_id: str
    start_ms: float
    end_ms: float

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


def critical_path(tree: TraceTree) -> list[Section]:
    """Jaeger's critical path, latest section first (its order); an iterative walk."""
    clamp = clamped_intervals(tree)
    kids = {
        s: sorted((c for c in tree.spans[s].children if clamp[c] is not None), key=lambda c: -clamp[c][1])
        for s in tree.spans
    }
    sections: list[Section] = []
    span_id: str | None = tree.root_id
    returning: float | None = None  # start of the child we walked back from
    while span_id is not None:
        lo, hi = clamp[span_id]
        end = hi if returning is None else returning
        if returning is None:
            child = kids[span_id][0] if kids[span_id] else None
        else:  # the last-finishing child that ended before the returning one started
            child = next((c for c in kids[span_id] if clamp[c][1] < returning), None)
        if child is not None:
            if clamp[child][1] != end:
                sections.append(Section(span_id, clamp[child][1], end))
            span_id, returning = child, None
        else:
            if lo != end:
                sections.append(Section(span_id, lo, end))
            span_id, returning = tree.spans[span_id].parent_id, lo
    return sections


def critical_time(sections: list[Section]) -> dict[str, float]:
    """Time each span spends on the critical path."""
    out: dict[str, float] = {}
    for s in sections:
        out[s.span_id] = out.get(s.span_id, 0.0) + s.duration_ms
    return out


# --- findings -------------------------------------------------------------------------
@dataclass(frozen=True)
class Bottleneck:
    span_id: str
    service: str
    endpoint: str
    self_ms: float
    share: float  # of the trace duration


@dataclass(frozen=True)
class NPlusOne:
    parent_span_id: str
    service: str  # the callee's
    target: str  # the endpoint or database statement called again and again
    calls: int
    total_ms: float
    span_ids: tuple[str, ...]


@dataclass(frozen=True)
class SequentialCalls:
    parent_span_id: str
    span_ids: tuple[str, ...]  # siblings that ran one after another
    elapsed_ms: float  # from the first start to the last end
    parallel_ms: float  # the longest of them: the time if run side by side
    saving_ms: float


@dataclass(frozen=True)
class ErrorOrigin:
    span_id: str
    service: str
    endpoint: str
    status_code: int | None
    error_message: str | None
    depth: int


@dataclass
class Findings:
    self_ms: dict[str, float]
    critical_path: list[Section]
    bottlenecks: list[Bottleneck]
    n_plus_one: list[NPlusOne]
    sequential: list[SequentialCalls]
    error_origin: ErrorOrigin | None


def bottlenecks(tree: TraceTree, self_ms: dict[str, float], share: float = BOTTLENECK_SHARE) -> list[Bottleneck]:
    """Recorded spans whose self time is over `share` of the trace, largest first."""
    total = tree.duration_ms
    if total <= 0 or len(tree.real_spans()) < 2:  # a lone span is all of its trace: nothing to point at
        return []
    found = [
        Bottleneck(s.span_id, s.service, s.endpoint, self_ms[s.span_id], self_ms[s.span_id] / total)
        for s in tree.real_spans()
        if self_ms[s.span_id] / total > share
    ]
    return sorted(found, key=lambda b: -b.self_ms)


def call_target(span: Span) -> str:
    """What a call asks for: its database statement if any, else its endpoint."""
    return span.db_statement or span.endpoint


def n_plus_one(tree: TraceTree, min_calls: int = N_PLUS_ONE_MIN_CALLS) -> list[NPlusOne]:
    """Under one parent, `min_calls` or more children calling the same (service, target)."""
    found = []
    for parent in tree.spans.values():
        groups: dict[tuple[str, str], list[Span]] = {}
        for child in tree.children(parent.span_id):
            groups.setdefault((child.service, call_target(child)), []).append(child)
        for (service, target), calls in groups.items():
            if len(calls) >= min_calls:
                found.append(
                    NPlusOne(
                        parent.span_id,
                        service,
                        target,
                        len(calls),
                        sum(c.duration_ms for c in calls),
                        tuple(c.span_id for c in calls),
                    )
                )
    return sorted(found, key=lambda f: (-f.calls, -f.total_ms))


def sequential_calls(tree: TraceTree, min_saving_ms: float = PARALLEL_MIN_SAVING_MS) -> list[SequentialCalls]:
    """Runs of siblings where each starts after the previous one ended: run side by side they
    would take as long as the longest. Whether they depend on each other the trace cannot
    tell; the finding says what parallelism would save if they do not."""
    found = []
    for parent in tree.spans.values():
        kids = tree.children(parent.span_id)
        run: list[Span] = []
        for child in kids + [None]:
            if child is not None and (not run or child.start_ms >= max(s.end_ms for s in run)):
                run.append(child)
                continue
            if len(run) >= 2:
                elapsed = max(s.end_ms for s in run) - run[0].start_ms
                longest = max(s.duration_ms for s in run)
                if elapsed - longest >= min_saving_ms:
                    found.append(
                        SequentialCalls(
                            parent.span_id, tuple(s.span_id for s in run), elapsed, longest, elapsed - longest
                        )
                    )
            run = [child] if child is not None else []
    return sorted(found, key=lambda f: -f.saving_ms)


def error_origin(tree: TraceTree) -> ErrorOrigin | None:
    """The deepest failed span whose children all succeeded (ties: the earliest)."""
    candidates = [s for s in tree.real_spans() if s.failed and not any(c.failed for c in tree.children(s.span_id))]
    if not candidates:
        return None
    best = min(candidates, key=lambda s: (-s.depth, s.start_ms))
    depth = best.depth - (1 if tree.root.synthetic else 0)  # counted from the recorded root
    return ErrorOrigin(best.span_id, best.service, best.endpoint, best.status_code, best.error_message, depth)


def analyse(tree: TraceTree) -> Findings:
    own = self_times(tree)
    return Findings(
        self_ms=own,
        critical_path=critical_path(tree),
        bottlenecks=bottlenecks(tree, own),
        n_plus_one=n_plus_one(tree),
        sequential=sequential_calls(tree),
        error_origin=error_origin(tree),
    )
