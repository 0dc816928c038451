"""Ranked root-cause candidates of an incident, from the spans in bronze.

Method (streaming: only spans of the incident and of the hour before it are read):

1. **Service visits.** The spans of a trace are cut into visits: a visit is the
   part of a request spent in one service (a server span and its same-service
   descendants). Each cross-service call has a *call interval*: the caller's
   client span when the caller has a dedicated one (a non-entry span whose only
   child is the callee's server span, as OpenTelemetry's HTTP clients record),
   else the callee's own span. A visit lasts its call interval, and its
   **self time** is that minus the union of its outgoing call intervals. So the
   wire and queueing time of a call is charged to the callee (a slow network
   on a pod, or a saturated pod, shows as the callee's self time at every
   caller), and a caller that only waits for a slow callee keeps its own
   self time: the direction of the call graph (a fault propagates to callers)
   is built into the measure.
2. **Abnormal visits** (TraceRCA's insight, with MicroRank's normal/abnormal
   spectrum, on self time): a visit is abnormal when its self time exceeds the
   `BASELINE_QUANTILE` of the same (service, endpoint) self times in the
   baseline by more than `MIN_EXTRA_MS`. A visit *originates an error* when it
   failed (status >= 500) while every call it made succeeded.
3. **Score per service**: for each signal, the rise of its share of abnormal
   visits over the baseline share, kept only when a one-sided binomial z-score
   reaches `MIN_Z` (few visits prove little). score = the larger rise, in [0, 1].
   Ties are broken by the median extra self time. New ERROR messages (not seen in
   the baseline) are reported as evidence of the service that logged them.

Baseline: the spans of the `LOOKBACK` before the incident, minus the time
ranges of earlier incidents (a fault's own minutes are not normal behaviour).

Hyperparameters (chosen on principle, not fitted to a dataset):
`BASELINE_QUANTILE` 0.95 (a normal visit is abnormal 5 % of the time by
definition), `MIN_EXTRA_MS` 1 ms (timer noise), `MIN_Z` 3 (the usual
three-sigma), `MIN_BASELINE_VISITS` 5 per endpoint before its own quantile is
trusted (else the service's), `LOOKBACK` 60 minutes, `MAX_CANDIDATES` 5.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from observability import bronze

SLOW_MADS = 3.0
ERROR_WEIGHT = 0.5
MIN_EXTRA_MS = 1.0
MIN_Z = 3.0
MIN_BASELINE_VISITS = 5
LOOKBACK = timedelta(minutes=60)
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

    def rank(self, spans: pd.DataFrame, start: datetime, end: datetime, exclude: list[tuple[datetime, datetime]] = ()) -> list[Candidate]:
        """Candidates for the incident [start, end) from spans covering [start - lookback, end)."""
        if spans is None or spans.empty:
            return []
        v = visits(spans)
        if v.empty:
            return []
        ts = v["start"]
        cur = v[(ts >= start) & (ts < end)]
        base_mask = (ts >= start - self.lookback) & (ts < start)
        for lo, hi in exclude:
            base_mask &= ~((ts >= lo) & (ts < hi))
        base = v[base_mask]
        if cur.empty:
            return []
        return self._score(cur, base)[: self.max_candidates]

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

    def _judge(self, df: pd.DataFrame, base: pd.DataFrame, value: str, keys: list[str], fallback: list[str] | None, prefix: str) -> None:
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
        for svc, ms in self._gap_time(cur, base, set(added)).items():
            added[svc] = added.get(svc, 0.0) + ms
        errors = self._own_errors(cur, base)
        base_msgs = set(base["error_message"].dropna())
        total_added = sum(added.values()) or 1.0
        total_err = sum(e[0] for e in errors.values()) or 1.0
        cands = []
        for svc, g in cur.groupby("service"):
            lat, err = added.get(svc, 0.0) / total_added, errors.get(svc, (0.0, 0, 0))[0] / total_err
            score = (lat + self.error_weight * err) / (1 + self.error_weight)
            if score <= 0:
                continue
            parts = []
            if lat > 0:
                extra = float(np.median(g["srv_extra"] + g["gap_extra"]))
                parts.append(f"self time +{max(extra, 0):.0f} ms per visit (median over {len(g)}), {lat:.0%} of the self time added in the incident")
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
        """Keys whose share of flagged rows rose significantly (z >= min_z) over the baseline share."""
        base_share = base[base[known]].groupby(by)[flag].mean().to_dict()
        out = {}
        for k, g in cur[cur[known]].groupby(by):
            _, z = _rise(int(g[flag].sum()), len(g), base_share.get(k, 0.05))
            out[k] = z >= self.min_z
        return out

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
        edges = calls.groupby("edge").agg(caller=("caller_service", "first"), callee=("service", "first"),
                                          n=("gap_ms", "size"), extra=("gap_extra", "sum"))
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
    df = spans[["trace_id", "span_id", "parent_span_id", "service", "endpoint", "timestamp", "latency_ms", "status_code", "error_message"]]
    df = df.dropna(subset=["trace_id", "span_id"]).drop_duplicates(["trace_id", "span_id"]).reset_index(drop=True)
    if df.empty:
        return pd.DataFrame(columns=["trace_id", "span_id", "caller", "caller_service", "gap_ms", "service", "endpoint", "start", "self_ms", "failed", "own_error", "error_message"])
    start = pd.to_datetime(df["timestamp"]).astype("int64").to_numpy() / 1e6  # ms
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
    return pd.DataFrame({
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
    })


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
def candidates_for(bronze_root: Path, start: datetime, end: datetime, exclude: list[tuple[datetime, datetime]] = (),
                   ranker: RootCauseRanker | None = None) -> list[dict]:
    """Read the spans around an incident from bronze and rank; [] when bronze has none."""
    ranker = ranker or RootCauseRanker()
    spans = bronze.read_events(Path(bronze_root), start - ranker.lookback, end)
    return [c.as_dict() for c in ranker.rank(spans, start, end, exclude)]


def to_json(candidates: list[dict]) -> str | None:
    return json.dumps(candidates) if candidates else None
