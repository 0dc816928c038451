"""Ranked root-cause candidates of an incident, from the spans in bronze.

Method (streaming: only the spans of the incident and of the `LOOKBACK` before
it are read; nothing is trained). It takes TraceRCA's insight (a service that
more abnormal and fewer normal requests pass through is more likely the root)
and MicroRank's comparison of abnormal with normal behaviour, measured on self
time as in TraceDiag, and adds the call graph's direction:

1. **Service visits.** The spans of a trace are cut into visits: the part of a
   request spent in one service (an entry span and its same-service
   descendants). A cross-service call has a *call interval*: the caller's
   client span when it has a dedicated one (a non-entry span whose only child is
   the callee's entry span, as OpenTelemetry HTTP clients record), else the
   callee's span. A visit's **self time** is its call interval minus the union of
   its own outgoing call intervals, split into *server time* (inside the
   callee's own spans) and *wire time* (call interval minus the callee's span:
   network and queueing). A caller that only waits for a slow callee keeps its
   self time: a fault propagates to callers, and this measure does not.
2. **Baselines**, per (service, endpoint) for server time and per call edge for
   wire time: median and median + `SLOW_MADS` x 1.4826 MAD of the lookback. Median
   and MAD tolerate up to half of the lookback being faulty, so earlier faults
   need not be known. A visit is *slow* above that bound (+ `MIN_EXTRA_MS`).
3. **Significance**: a service's (or edge's) rise counts only when its share of
   slow visits exceeds the baseline share with a one-sided binomial z >= `MIN_Z`.
4. **Added self time** per service: the sum over its visits of (server time -
   baseline median) where significant, plus wire time. The extra wire time of a
   significant edge is split between callee and caller: in proportion to the
   share of the callee's incoming calls on significant edges, and of the caller's
   outgoing ones; the caller's share counts only when the caller shows trouble of
   its own (its server time, or its own incoming wire time, rose), so a slow pod
   network or a CPU-starved caller is told from a slow callee.
5. **Own errors**: failed visits (status >= 500) none of whose calls failed or
   were slow (a timeout is the slow callee's), above the baseline rate (z >= MIN_Z).
6. **Score** = (share of the incident's added self time + `ERROR_WEIGHT` x share
   of its excess own errors) / (1 + `ERROR_WEIGHT`), in [0, 1], best first (a
   signal the incident does not show at all drops out of both sums). New
   ERROR messages (absent from the baseline) are named in the evidence.

Hyperparameters (chosen on principle, not fitted to a dataset): `SLOW_MADS` 3
and `MIN_Z` 3 (the usual three-sigma, robust form), `MIN_EXTRA_MS` 1 ms (timer
noise), `MIN_BASELINE_VISITS` 5 per endpoint before its own baseline is trusted
(else the service's), `LOOKBACK` 60 minutes, `ERROR_WEIGHT` 0.5 (an error is
weaker evidence than time: statuses are often set by a caller that gave up),
`ONSET_SLACK` 2 minutes (the incident's spans are read from that long before its
first anomalous window: a fault starts before it is detected, by about one window
as the detector's measured delay is 60-120 s), `MIN_SPAN` 3 minutes (an incident
is judged on at least its first 3 windows, so enough visits reach the z-test even
when the anomaly that opened it lasted one window; while the incident is open it
is ranked again each cycle as those windows arrive), `MAX_CANDIDATES` 5.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from observability import bronze
from observability.logs import get_logger

log = get_logger(__name__)

SLOW_MADS = 3.0
ERROR_WEIGHT = 0.5
MIN_EXTRA_MS = 1.0
MIN_Z = 3.0
MIN_BASELINE_VISITS = 5
LOOKBACK = timedelta(minutes=60)
ONSET_SLACK = timedelta(minutes=2)
MIN_SPAN = timedelta(minutes=3)
ONSET_HORIZON = timedelta(minutes=5)
MAX_CANDIDATES = 5
_MAX_DEPTH = 64


@dataclass
class Candidate:
    service: str
    score: float
    evidence: str

    def as_dict(self) -> dict:
        return {"service": self.service, "score": round(float(self.score), 3), "evidence": self.evidence}


@dataclass
class RootCauseRanker:
    """Ranks services by how much of an incident's trouble starts in them (see the module docstring)."""

    slow_mads: float = SLOW_MADS
    min_extra_ms: float = MIN_EXTRA_MS
    min_z: float = MIN_Z
    error_weight: float = ERROR_WEIGHT
    min_baseline_visits: int = MIN_BASELINE_VISITS
    max_candidates: int = MAX_CANDIDATES
    lookback: timedelta = LOOKBACK
    onset_slack: timedelta = ONSET_SLACK
    min_span: timedelta = MIN_SPAN
    onset_horizon: timedelta = ONSET_HORIZON

    def rank(self, spans: pd.DataFrame, start: datetime, end: datetime) -> list[Candidate]:
        """Candidates for the incident [start, end) from spans covering [start - onset_slack - lookback, end)."""
        if spans is None or spans.empty:
            return []
        return self.rank_visits(visits(spans), start, end)

    def rank_visits(self, v: pd.DataFrame, start: datetime, end: datetime) -> list[Candidate]:
        """As `rank`, from precomputed `visits(spans)` (one pass serves many incidents).

        The root cause is where the incident began: services are ranked on its
        onset, the first `onset_horizon` of it. An incident that runs longer may
        have taken in a second fault (a connected service failing while it was
        still open); the leader over its whole span then comes second, when the
        onset did not already name it first or second.
        """
        if v.empty:
            return []
        onset_end = max(start + self.min_span, min(end, start + self.onset_horizon))
        first = self._rank_between(v, start, onset_end)
        if max(end, start + self.min_span) <= onset_end:
            return first[: self.max_candidates]
        whole = self._rank_between(v, start, end)
        if whole and whole[0].service not in {c.service for c in first[:2]}:
            late = whole[0]
            evidence = f"leads the ranking over the whole incident, not its onset (a later fault?): {late.evidence}"
            first = [*first[:1], Candidate(late.service, late.score, evidence)] + [
                c for c in first[1:] if c.service != late.service
            ]
        return first[: self.max_candidates]

    def _rank_between(self, v: pd.DataFrame, start: datetime, end: datetime) -> list[Candidate]:
        ts = v["start"]
        end = max(end, start + self.min_span)
        start = start - self.onset_slack
        cur = v[(ts >= start) & (ts < end)]
        base = v[(ts >= start - self.lookback) & (ts < start)]
        if cur.empty:
            return []
        return self._score(cur, base)

    # -- scoring -----------------------------------------------------------------
    def _bounds(self, base: pd.DataFrame, value: str, keys: list[str], fallback: list[str] | None) -> pd.DataFrame:
        """Per key: median and robust upper bound (median + slow_mads x 1.4826 MAD) of a baseline value.

        Median and MAD have a 50 % breakdown point: an earlier fault in the lookback
        (a third of it, say) does not move the bound, so no list of faulty minutes is needed.
        Keys with fewer than `min_baseline_visits` rows fall back to the coarser `fallback` keys.
        """

        def table(by: list[str]) -> pd.DataFrame:
            g = base.groupby(by)[value]
            med = g.transform("median")
            mad = (base[value] - med).abs().groupby([base[c] for c in by]).median()
            t = pd.DataFrame({"n": g.size(), "median": g.median(), "mad": mad})
            t["bound"] = t["median"] + self.slow_mads * 1.4826 * t["mad"] + self.min_extra_ms
            return t

        fine = table(keys)
        fine = fine[fine["n"] >= self.min_baseline_visits]
        return fine, (table(fallback) if fallback else None)

    def _judge(
        self, df: pd.DataFrame, base: pd.DataFrame, value: str, keys: list[str], fallback: list[str] | None, prefix: str
    ) -> None:
        """Adds <prefix>_known, <prefix>_slow, <prefix>_extra columns to df (in place)."""
        fine, coarse = self._bounds(base, value, keys, fallback)
        ref = df[keys].join(fine[["median", "bound"]], on=keys)
        if coarse is not None:
            c = df[fallback].join(coarse[["median", "bound"]], on=fallback)
            ref = ref.fillna({"median": c["median"], "bound": c["bound"]})
        known = ref["bound"].notna().to_numpy()
        df[f"{prefix}_known"] = known
        df[f"{prefix}_slow"] = known & (df[value].to_numpy() > ref["bound"].fillna(np.inf).to_numpy())
        df[f"{prefix}_extra"] = np.where(known, df[value].to_numpy() - ref["median"].fillna(0).to_numpy(), 0.0)

    def _score(self, cur: pd.DataFrame, base: pd.DataFrame) -> list[Candidate]:
        cur, base = cur.copy(), base.copy()
        for df in (cur, base):
            df["server_ms"] = (df["self_ms"] - df["gap_ms"]).clip(lower=0)
            df["edge"] = df["caller_service"].fillna("") + ">" + df["service"]
        for df in (cur, base):
            self._judge(df, base, "server_ms", ["service", "endpoint"], ["service"], "srv")
            self._judge(df, base, "gap_ms", ["edge"], None, "gap")
        # An error is not a service's own when one of its calls failed or was abnormally slow
        # (a timeout is the slow callee's fault).
        slow_any = cur["srv_slow"] | cur["gap_slow"]
        blamed_callee = set(cur.loc[slow_any | cur["failed"], "caller"].dropna())
        cur["own_error"] = cur["own_error"] & ~cur["span_id"].isin(blamed_callee)
        added = self._server_time(cur, base)
        slow_excess = self._slow_excess(cur, base, set(added))
        for svc, ms in self._gap_time(cur, base, set(added)).items():
            added[svc] = added.get(svc, 0.0) + ms
        errors = self._own_errors(cur, base)
        base_msgs = set(base["error_message"].dropna())
        total_added = sum(added.values())
        total_err = sum(e[0] for e in errors.values())
        # Each signal weighs as many abnormal visits as it shows beyond its baseline: excess slow
        # visits for time, excess own errors (x error_weight) for errors. A signal the incident does
        # not show drops out (a pure latency fault can score 1), and a trivial but significant
        # slowdown (a few extra slow visits among thousands) cannot outweigh hundreds of failures.
        w_lat = slow_excess if total_added > 0 else 0.0
        w_err = self.error_weight * total_err
        if w_lat + w_err <= 0:
            return []
        total_added, total_err = total_added or 1.0, total_err or 1.0
        cands = []
        for svc, g in cur.groupby("service"):
            lat, err = added.get(svc, 0.0) / total_added, errors.get(svc, (0.0, 0, 0))[0] / total_err
            score = (w_lat * lat + w_err * err) / (w_lat + w_err)
            if score <= 0:
                continue
            parts = []
            if lat > 0:
                extra = float(np.median(g["srv_extra"] + g["gap_extra"]))
                parts.append(
                    f"self time +{max(extra, 0):.0f} ms per visit (median over {len(g)}), {lat:.0%} of the self time added in the incident"
                )
            if err > 0:
                _, n_err, n = errors[svc]
                parts.append(f"own errors: {n_err} of {n} visits failed while their callees were healthy")
            new_msgs = [m for m in g.loc[g["own_error"], "error_message"].dropna().unique() if m not in base_msgs]
            if new_msgs:
                parts.append("ERROR logs: new template " + "; ".join(f"'{m[:80]}'" for m in new_msgs[:2]))
            cands.append((score, svc, "; ".join(parts)))
        cands.sort(key=lambda c: (-c[0], c[1]))
        return [Candidate(svc, min(1.0, s), ev) for s, svc, ev in cands]

    def _significant(self, cur: pd.DataFrame, base: pd.DataFrame, by: str, flag: str, known: str) -> dict:
        """key -> its excess flagged rows over the baseline share (rise x rows) where that rise is
        significant (z >= min_z), else 0 (so the value is also a truth value)."""
        base_share = base[base[known]].groupby(by)[flag].mean().to_dict()
        out = {}
        for k, g in cur[cur[known]].groupby(by):
            rise, z = _rise(int(g[flag].sum()), len(g), base_share.get(k, 0.05))
            out[k] = rise * len(g) if z >= self.min_z else 0.0
        return out

    def _slow_excess(self, cur: pd.DataFrame, base: pd.DataFrame, slow_inside: set[str]) -> float:
        """Excess slow visits behind the incident's added self time: of the services slower inside
        and of the call edges slower on the wire (the weight of the time signal in the score)."""
        srv = self._significant(cur, base, "service", "srv_slow", "srv_known")
        total = sum(v for k, v in srv.items() if k in slow_inside)
        calls = cur[cur["caller_service"].notna() & cur["gap_known"]]
        if len(calls):
            extra = calls.groupby("edge")["gap_extra"].sum()
            gap = self._significant(calls, base[base["caller_service"].notna()], "edge", "gap_slow", "gap_known")
            total += sum(v for k, v in gap.items() if extra.get(k, 0.0) > 0)
        return float(total)

    def _server_time(self, cur: pd.DataFrame, base: pd.DataFrame) -> dict[str, float]:
        """Extra time spent inside each service (its server spans minus its calls), where significant."""
        sig = self._significant(cur, base, "service", "srv_slow", "srv_known")
        net = cur[cur["srv_known"]].groupby("service")["srv_extra"].sum()
        return {s: max(0.0, float(v)) for s, v in net.items() if sig.get(s)}

    def _gap_time(self, cur: pd.DataFrame, base: pd.DataFrame, slow_inside: set[str]) -> dict[str, float]:
        """Extra time on the wire of each call edge, split between caller and callee.

        A rise seen on most of a callee's incoming edges is the callee's; one seen on
        most of a caller's outgoing edges is the caller's (its CPU or network slows
        every call it makes), but only when the caller shows trouble of its own too:
        slower inside (`slow_inside`) or slower to reach (its own incoming edges).
        Otherwise the fault is taken to be downstream, as faults propagate to callers.
        Each significant edge's extra time is split in proportion to those shares.
        """
        calls = cur[cur["caller_service"].notna() & cur["gap_known"]]
        if calls.empty:
            return {}
        sig = self._significant(calls, base[base["caller_service"].notna()], "edge", "gap_slow", "gap_known")
        edges = calls.groupby("edge").agg(
            caller=("caller_service", "first"),
            callee=("service", "first"),
            n=("gap_ms", "size"),
            extra=("gap_extra", "sum"),
        )
        edges["sig"] = [bool(sig.get(e)) for e in edges.index]
        w = edges["n"] * edges["sig"]
        out_share = w.groupby(edges["caller"]).sum() / edges["n"].groupby(edges["caller"]).sum()
        in_share = w.groupby(edges["callee"]).sum() / edges["n"].groupby(edges["callee"]).sum()
        out: dict[str, float] = {}
        for e in edges[edges["sig"] & (edges["extra"] > 0)].itertuples():
            a, b = float(out_share.get(e.caller, 0.0)), float(in_share.get(e.callee, 0.0))
            a *= 1.0 if e.caller in slow_inside else float(in_share.get(e.caller, 0.0))
            if a + b <= 0:
                continue
            out[e.caller] = out.get(e.caller, 0.0) + e.extra * a / (a + b)
            out[e.callee] = out.get(e.callee, 0.0) + e.extra * b / (a + b)
        return out

    def _own_errors(self, cur: pd.DataFrame, base: pd.DataFrame) -> dict[str, tuple[float, int, int]]:
        """service -> (excess own errors over the baseline rate, own errors, visits), where significant."""
        base_err = base.groupby("service")["own_error"].mean().to_dict()
        out = {}
        for svc, g in cur.groupby("service"):
            k = int(g["own_error"].sum())
            rise, z = _rise(k, len(g), base_err.get(svc, 0.0))
            if z >= self.min_z and rise > 0:
                out[svc] = (rise * len(g), k, len(g))
        return out


def _rise(k: int, n: int, p0: float) -> tuple[float, float]:
    """(share rise over p0, one-sided binomial z) for k of n."""
    if n <= 0:
        return 0.0, 0.0
    p0 = min(max(p0, 0.01), 0.99)  # a baseline of 0 would make any single hit infinitely significant
    rise = k / n - p0
    z = rise / math.sqrt(p0 * (1 - p0) / n)
    return rise, z


# -- visits ------------------------------------------------------------------------
def visits(spans: pd.DataFrame) -> pd.DataFrame:
    """One row per service visit: trace_id, span_id (its entry span), service, endpoint, start,
    self_ms, failed, own_error, error_message (see the module docstring)."""
    df = spans[list(SPAN_COLUMNS)]
    df = df.dropna(subset=["trace_id", "span_id"]).drop_duplicates(["trace_id", "span_id"]).reset_index(drop=True)
    if df.empty:
        return pd.DataFrame(
            columns=[
                "trace_id",
                "span_id",
                "caller",
                "caller_service",
                "gap_ms",
                "service",
                "endpoint",
                "start",
                "self_ms",
                "failed",
                "own_error",
                "error_message",
            ]
        )
    start = (
        pd.to_datetime(df["timestamp"]).to_numpy().astype("datetime64[ns]").astype("int64") / 1e6
    )  # epoch ms, any input unit
    dur = df["latency_ms"].astype(float).to_numpy()
    key = pd.MultiIndex.from_arrays([df["trace_id"], df["span_id"]])
    pos = pd.Series(np.arange(len(df)), index=key)
    pidx = pos.reindex(pd.MultiIndex.from_arrays([df["trace_id"], df["parent_span_id"].fillna("")])).to_numpy()
    has_parent = ~np.isnan(pidx)
    pidx = np.where(has_parent, pidx, -1).astype(int)
    svc = df["service"].to_numpy()
    same = has_parent & (svc[np.maximum(pidx, 0)] == svc)
    entry = ~same  # root, orphan, or parent in another service
    # visit of each span: follow same-service parents up to the entry span
    visit = np.where(entry, np.arange(len(df)), pidx)
    for _ in range(_MAX_DEPTH):
        nxt = np.where(entry[visit], visit, pidx[visit])
        if np.array_equal(nxt, visit):
            break
        visit = nxt
    # a cross-service call: entry span with a parent; its call interval is the parent's
    # when that parent is a dedicated client span (non-entry, exactly one child)
    n_children = np.bincount(pidx[has_parent], minlength=len(df))
    cross = entry & has_parent
    par = np.maximum(pidx, 0)
    dedicated = cross & ~entry[par] & (n_children[par] == 1)
    call_start = np.where(dedicated, start[par], start)
    call_dur = np.where(dedicated, dur[par], dur)
    caller_visit = np.where(cross, visit[par], -1)
    # union of outgoing call intervals per caller visit
    calls = pd.DataFrame({"v": caller_visit[cross], "s": call_start[cross], "e": call_start[cross] + call_dur[cross]})
    busy = _union_length(calls)
    entries = np.flatnonzero(entry)
    seen = call_dur[entries]
    self_ms = np.maximum(0.0, seen - np.nan_to_num(busy.reindex(entries).to_numpy(), nan=0.0))
    failed_span = df["status_code"].to_numpy() >= 500
    failed = failed_span[entries]
    # an error originates here when the visit failed and none of its calls failed
    child_failed = pd.Series(failed_span[cross], index=caller_visit[cross]).groupby(level=0).any()
    callee_failed = child_failed.reindex(entries).astype("boolean").fillna(False).to_numpy(dtype=bool)
    msgs = df["error_message"].to_numpy()
    visit_msg = pd.Series(msgs).where(failed_span).groupby(visit).first().reindex(entries).to_numpy()
    return pd.DataFrame(
        {
            "trace_id": df["trace_id"].to_numpy()[entries],
            "span_id": df["span_id"].to_numpy()[entries],
            "service": svc[entries],
            "caller": np.where(cross[entries], df["span_id"].to_numpy()[np.maximum(caller_visit[entries], 0)], None),
            "caller_service": np.where(cross[entries], svc[np.maximum(caller_visit[entries], 0)], None),
            "endpoint": df["endpoint"].to_numpy()[entries],
            "start": pd.to_datetime(start[entries], unit="ms"),
            "self_ms": self_ms,
            "gap_ms": np.clip(seen - dur[entries], 0.0, None),  # wire + queueing time of the call into this visit
            "failed": failed,
            "own_error": failed & ~callee_failed,
            "error_message": np.where(failed & ~callee_failed, visit_msg, None),
        }
    )


def _union_length(calls: pd.DataFrame) -> pd.Series:
    """Total length of the union of [s, e) intervals per group `v`."""
    if calls.empty:
        return pd.Series(dtype=float)
    c = calls.sort_values(["v", "s"]).reset_index(drop=True)
    prev_end = c.groupby("v")["e"].cummax().groupby(c["v"]).shift()
    new_seg = prev_end.isna() | (c["s"] > prev_end)
    seg = new_seg.cumsum()
    g = c.groupby(seg).agg(v=("v", "first"), s=("s", "min"), e=("e", "max"))
    return (g["e"] - g["s"]).groupby(g["v"]).sum()


# -- platform glue -------------------------------------------------------------------
# The ranker reads an incident's spans plus LOOKBACK (an hour) of baseline: at 50,000 spans/s
# that is ~200M spans, and reading them whole took the detector to 15 GB (bench_sustained). Past
# MAX_SPANS it reads a hash sample of whole traces instead (a trace's visits stay intact, and the
# ranker compares shares of visits, which a uniform sample of traces keeps). ~0.5 KB per span in
# pandas: 1M spans is about 0.5 GB.
MAX_SPANS = 1_000_000
SAMPLE_BUCKETS = 10_000
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "endpoint",
    "timestamp",
    "latency_ms",
    "status_code",
    "error_message",
)


def read_spans(bronze_root: Path, start: datetime, end: datetime, max_spans: int = MAX_SPANS) -> pd.DataFrame:
    """The bronze spans of [start, end) that `visits` uses (empty when bronze has none: rank() then
    returns []); past `max_spans`, those of a hash sample of whole traces of about that size."""
    root = Path(bronze_root)
    n = bronze.count_events(root, start, end)
    if n <= max_spans:
        return bronze.read_events(root, start, end, columns=SPAN_COLUMNS)
    keep = max(1, SAMPLE_BUCKETS * max_spans // n)
    log.info("root cause spans sampled by trace", spans=n, max_spans=max_spans, kept_share=keep / SAMPLE_BUCKETS)
    return bronze.read_events(root, start, end, "hash(trace_id) % ? < ?", [SAMPLE_BUCKETS, keep], columns=SPAN_COLUMNS)


def parse(raw) -> list[dict]:
    """A stored `root_cause_candidates` value (JSON text, list or null) -> list of dicts."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    return [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
