"""One detection cycle: what it scores, and what it writes in one transaction.

A cycle scores every final window (window_end <= the stream's watermark) not yet
scored, in time chunks; for each chunk it writes the anomalies, the incidents it
touched and the per-service progress mark in ONE transaction, so a re-run (or a
crash and restart) scores each window exactly once. The same transaction stages
each new anomaly in the outbox (`observability.outbox`); after the commit the
outbox publisher sends them to the anomalies topic and marks them sent, and each
cycle first resends what an earlier (killed) one left unsent: at least once,
with the anomaly id as the message key and the record's `id`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import pandas as pd

from anomaly_detection import correlation, data, incidents, persistence, registry, retraining, root_cause, silence
from anomaly_detection.detectors import MODEL_KINDS, RobustStatsDetector, RulesDetector
from anomaly_detection.ensemble import Ensemble
from observability import outbox, tables
from observability.faults import fault_point
from observability.logs import get_logger
from observability.store import Store, utcnow

log = get_logger(__name__)
_NS = uuid.UUID("0c7d3f7e-33c5-4d7b-8f0a-6d1bb2f6b1a4")
HISTORY_HOURS = 72
CHUNK_MINUTES = 360
SAMPLE_TRACES = 5
MIN_BOOTSTRAP_WINDOWS = 6 * 60  # per service on average: "the first hours" belong to rules and statistics


@dataclass
class CycleResult:
    windows: int = 0
    anomalies: int = 0
    incidents_changed: int = 0
    watermark: datetime | None = None
    models: dict = field(default_factory=dict)


def anomaly_id(service: str, window_start) -> str:
    return str(uuid.uuid5(_NS, f"anomaly|{service}|{pd.Timestamp(window_start).isoformat()}"))


class DetectionService:
    def __init__(
        self,
        settings,
        store: Store | None = None,
        *,
        producer=None,
        bootstrap_models: bool = True,
        publish: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store or Store.from_settings(settings, max_wait_seconds=settings.detect_lock_wait_seconds)
        self.bootstrap_models = bootstrap_models
        self.publish = publish
        self._producer = producer
        self._outbox = outbox.OutboxPublisher(self.store, [settings.anomalies_topic], self._connect)
        self._models: dict[str, tuple[str, object]] = {}
        self._migrated = False
        self.now = utcnow  # the wall clock: is the stream live (data.detection_horizon)?

    # -- models --------------------------------------------------------------------
    def _load_models(self) -> dict[str, object]:
        out = {}
        for kind in MODEL_KINDS:
            version = registry.promoted_version(self.store, kind)
            if version is None:
                self._models.pop(kind, None)
                continue
            cached = self._models.get(kind)
            if cached is None or cached[0] != version:
                try:
                    self._models[kind] = (version, registry.load(self.settings, version))
                    log.info("model loaded", model=kind, version=version)
                except Exception as exc:  # a broken version must not stop detection
                    log.warning("model load failed", model=kind, version=version, error=str(exc))
                    continue
            out[kind] = self._models[kind][1]
        return out

    def _maybe_bootstrap(self) -> None:
        """Train and promote a first model of each kind once there are hours of history."""
        if not self.bootstrap_models:
            return
        missing = [k for k in MODEL_KINDS if registry.promoted_version(self.store, k) is None]
        if not missing:
            return
        if data.windows_per_service(self.store) < MIN_BOOTSTRAP_WINDOWS:
            return
        for kind in missing:
            version = retraining.train_candidate(kind, self.settings, self.store)
            metrics = retraining.evaluate_candidate(version, self.settings, self.store)
            retraining.promote_if_not_worse(version, metrics, self.settings, self.store)

    def _ensemble(self) -> Ensemble:
        dets = {
            RulesDetector.name: RulesDetector(slas=self.settings.service_slas),
            RobustStatsDetector.name: RobustStatsDetector(),
        }
        models = self._load_models()
        for kind in MODEL_KINDS:
            if kind in models:
                dets[kind] = models[kind]
        return Ensemble(dets)

    # -- one cycle -----------------------------------------------------------------
    def horizon(self) -> datetime | None:
        """Windows ending at or before it are final for scoring (`data.detection_horizon`)."""
        s = self.settings
        return data.detection_horizon(self.store, s.detect_settle_seconds, s.watermark_seconds, now=self.now())

    def run_once(self) -> CycleResult:
        if not self._migrated:
            self.store.migrate()
            self._migrated = True
        result = CycleResult()
        self._send_outbox()  # what a killed cycle committed but did not get sent
        wm = self.horizon()
        result.watermark = wm
        if wm is None:
            log.info("no watermark yet: nothing is final")
            self.store.heartbeat(tables.DETECTOR_HEARTBEAT, "waiting for watermark")
            return result
        self._maybe_bootstrap()
        ensemble = self._ensemble()
        result.models = {k: v[0] for k, v in self._models.items()}
        recent = data.services_since(self.store, wm - timedelta(hours=HISTORY_HOURS))
        while True:
            marks = data.progress_marks(self.store)
            start = _next_start(
                data.first_unscored_start(self.store, wm), {s: m for s, m in marks.items() if s in recent}, wm
            )
            if start is None:
                break
            chunk_end = start + timedelta(minutes=CHUNK_MINUTES)
            windows = data.unscored(self.store, wm, chunk_end)
            n_anom, n_inc = self._score_chunk(ensemble, windows, marks, start, min(chunk_end, wm))
            result.windows += len(windows)
            result.anomalies += n_anom
            result.incidents_changed += n_inc
            if n_anom:
                self._send_outbox()
        self.store.heartbeat(
            tables.DETECTOR_HEARTBEAT, f"watermark={wm} windows={result.windows} anomalies={result.anomalies}"
        )
        log.info(
            "cycle done",
            windows=result.windows,
            anomalies=result.anomalies,
            incidents_changed=result.incidents_changed,
            watermark=str(wm),
        )
        return result

    def _score_chunk(
        self, ensemble: Ensemble, windows: pd.DataFrame, marks: dict[str, datetime], start: datetime, through: datetime
    ) -> tuple[int, int]:
        """Score the chunk's windows and its silent minutes; every final minute before `through` is then judged."""
        first = windows["window_start"].min() if len(windows) else pd.Timestamp(start)
        history = data.metrics(self.store, first - timedelta(hours=HISTORY_HOURS), first)
        ensemble.fit(history, only=(RulesDetector.name, RobustStatsDetector.name))
        for kind in MODEL_KINDS:
            if kind in ensemble.detectors:
                ensemble.detectors[kind].set_context(history)
        verdicts = ensemble.evaluate(windows)
        scored = pd.concat(
            [windows[["service", "window_start", "window_end"]].reset_index(drop=True), verdicts], axis=1
        )
        silent = silence.silent_windows(history, windows, marks, through)
        if len(silent):
            scored = pd.concat([scored, silent[scored.columns]], ignore_index=True)
        now = utcnow()
        anomalies = self._anomaly_rows(scored[scored["is_anomaly"].astype(bool)], now)
        progress = _progress_marks(windows, marks, through)
        progress["updated_at"] = now
        changed = self._incidents(scored, anomalies, now, through)
        messages = (
            [(r["id"], r["id"], anomaly_message(r)) for r in anomalies.to_dict("records")] if self.publish else []
        )

        def write(con: duckdb.DuckDBPyConnection) -> None:  # one transaction: see the module docstring
            persistence.write_cycle(
                con,
                anomalies=anomalies,
                messages=messages,
                topic=self.settings.anomalies_topic,
                changed=changed,
                progress=progress,
                now=now,
            )

        self.store.write(write)
        if len(anomalies):
            fault_point("detector.after_commit")
        return len(anomalies), len(changed)

    def _anomaly_rows(self, hits: pd.DataFrame, now: datetime) -> pd.DataFrame:
        cols = persistence.ANOMALY_COLUMNS
        if hits.empty:
            return pd.DataFrame(columns=cols)
        samples = data.trace_samples(self.store, hits["window_start"].min(), hits["window_start"].max())
        by_key = samples.groupby(["window_start", "service"])["trace_id"].apply(list).to_dict() if len(samples) else {}
        rows = []
        for h in hits.itertuples(index=False):
            rows.append(
                {
                    "id": anomaly_id(h.service, h.window_start),
                    "service": h.service,
                    "window_start": h.window_start,
                    "window_end": h.window_end,
                    "detected_at": now,
                    "anomaly_type": h.anomaly_type,
                    "severity": h.severity,
                    "score": float(h.score),
                    "detectors": json.dumps(h.detectors),
                    "baseline": json.dumps(h.baseline),
                    "observed": json.dumps(h.observed),
                    "sample_trace_ids": by_key.get((pd.Timestamp(h.window_start), h.service), [])[:SAMPLE_TRACES],
                }
            )
        return pd.DataFrame(rows, columns=cols)

    def _incidents(
        self, scored: pd.DataFrame, new_anomalies: pd.DataFrame, now: datetime, through: datetime
    ) -> list[incidents.Incident]:
        """Advance the incidents over the scored windows (correlated through the call graph), rank
        their root causes, and set `incident_id` on the new anomaly rows (in place)."""
        open_by_service: dict[str, incidents.Incident] = {}
        before: dict[str, incidents.Incident] = {}
        for inc in persistence.open_incidents(self.store):
            for svc in incidents.members(inc):
                open_by_service.setdefault(svc, inc)
            before[inc.id] = incidents.Incident(**{**inc.__dict__, "related_services": list(inc.related_services)})
        pending = {s: v for s, v in data.pending_low(self.store).items() if s not in open_by_service}
        first = pd.Timestamp(scored["window_start"].min()).to_pydatetime() if len(scored) else now
        graph = correlation.CallGraph(
            data.dependencies(self.store, first - timedelta(hours=1), pd.Timestamp(through).to_pydatetime())
        )
        assigned: dict = {}
        touched = incidents.advance(
            open_by_service, scored, now, pending_low=pending, through=through, graph=graph, assigned=assigned
        )
        if len(new_anomalies):
            new_anomalies["incident_id"] = [
                assigned.get((svc, pd.Timestamp(ws)))
                for svc, ws in zip(new_anomalies["service"], new_anomalies["window_start"], strict=False)
            ]
        # Open incidents of services not in this chunk may relate to new anomalies too.
        ids = {i.id for i in touched}
        touched += [i for i in {id(v): v for v in open_by_service.values()}.values() if i.id not in ids]
        if not touched:
            return []
        self._rank(touched, new_anomalies, graph, through)
        changed = []
        for inc in touched:
            old = before.get(inc.id)
            if old is None or not inc.same_as(old):
                inc.updated_at = now
                changed.append(inc)
        return changed

    def _rank(
        self,
        touched: list[incidents.Incident],
        new_anomalies: pd.DataFrame,
        graph: correlation.CallGraph,
        through: datetime,
    ) -> None:
        """Place each incident at its most upstream service and rank its root causes (from the spans,
        else its traffic origin), over the stored and the new anomalies around it."""
        lo = min(i.started_at for i in touched) - timedelta(minutes=10)
        hi = max(pd.Timestamp(through).to_pydatetime(), max(i.last_anomaly_end for i in touched)) + timedelta(
            minutes=10
        )
        known = data.anomaly_kinds(self.store, lo, hi)
        frames = [f for f in (known, new_anomalies[["service", "window_start", "anomaly_type"]]) if len(f)]
        anomalies = pd.concat(frames, ignore_index=True) if frames else known
        anomalies["window_start"] = pd.to_datetime(anomalies["window_start"])
        deps = data.dependencies(self.store, lo, hi)
        ranker = root_cause.RootCauseRanker()
        span_visits = root_cause.visits(
            root_cause.read_spans(
                self.settings.bronze_dir, lo - ranker.onset_slack - ranker.lookback, hi + ranker.min_span
            )
        )
        for inc in touched:
            self._place(inc, anomalies, graph)
            _, inc.root_cause_service = incidents.relate(inc, anomalies, deps)
            end = inc.ended_at or inc.last_anomaly_end or inc.started_at + timedelta(minutes=1)
            inc.root_cause_candidates = [c.as_dict() for c in ranker.rank_visits(span_visits, inc.started_at, end)]
            if not inc.root_cause_candidates:
                inc.root_cause_candidates = _traffic_origin(inc, anomalies)
            if inc.root_cause_candidates:
                inc.root_cause_service = inc.root_cause_candidates[0]["service"]

    @staticmethod
    def _place(inc: incidents.Incident, anomalies: pd.DataFrame, graph: correlation.CallGraph) -> None:
        """Show a correlated incident at its most upstream service; the others are related."""
        services = incidents.members(inc)
        onset = anomalies[anomalies["service"].isin(services) & (anomalies["window_start"] >= inc.started_at)]
        onset = onset.groupby("service")["window_start"].min().to_dict()
        inc.service = graph.most_upstream(services, onset)
        inc.related_services = sorted(services - {inc.service})

    # -- publishing ------------------------------------------------------------------
    def _connect(self):
        if self._producer is not None:  # the one handed in (tests); after a failure, a fresh one
            producer, self._producer = self._producer, None
            return producer
        from observability.transport import create_producer

        return create_producer(self.settings)

    def _send_outbox(self) -> None:
        """Send the unsent anomalies; a transport failure keeps them for the next cycle."""
        if self.publish:
            self._outbox.try_publish()

    def close(self) -> None:
        try:
            self._outbox.close()
        except Exception as exc:  # noqa: BLE001 - what it could not deliver stays in the outbox
            log.warning("closing the anomalies producer failed", error=str(exc)[:300])


TRAFFIC_TYPES = frozenset({"traffic_drop", "traffic_surge"})
# Kinds that travel up the call graph (a slow or failing callee makes its callers slow or fail).
UPWARD_TYPES = frozenset({"error_surge", "latency_spike", "latency_drift"})


def _traffic_origin(inc: incidents.Incident, anomalies: pd.DataFrame) -> list[dict]:
    """When the spans show no added self time and no errors and the incident is a traffic change
    seen at its most upstream service, with no latency or error anomaly anywhere in it, its origin
    is that upstream service: arriving traffic travels down to the callees, while latency and
    errors travel up to the callers. The callees' own anomalies may be `multivariate` (the models
    see their traffic shift too); that does not make them the origin."""
    end = inc.ended_at or inc.last_anomaly_end or inc.started_at
    mine = anomalies[
        anomalies["service"].isin(incidents.members(inc))
        & (anomalies["window_start"] >= inc.started_at)
        & (anomalies["window_start"] < end)
    ]
    kinds = set(mine["anomaly_type"].dropna())
    at_top = set(mine.loc[mine["service"] == inc.service, "anomaly_type"].dropna())
    if not at_top & TRAFFIC_TYPES or kinds & UPWARD_TYPES:
        return []
    return [
        {
            "service": inc.service,
            "score": 1.0,
            "evidence": f"{'/'.join(sorted(at_top & TRAFFIC_TYPES))} seen here first, upstream of "
            f"{len(inc.related_services)} affected services; the spans show no added self time and no errors",
        }
    ]


def anomaly_message(row: dict) -> dict:
    """An anomalies-table row as the topic's JSON object (JSON columns inlined, trace ids a list)."""
    msg = {k: (json.loads(v) if k in ("detectors", "baseline", "observed") else v) for k, v in row.items()}
    msg["sample_trace_ids"] = list(msg.get("sample_trace_ids") or [])
    return msg


def _next_start(first_unscored: datetime | None, marks: dict[str, datetime], watermark: datetime) -> datetime | None:
    """Where the next chunk starts: the first unscored window, or the first final minute a known service has not been judged for.

    `marks`: of the services seen within the history only; silence older than the history
    is not judged (nothing to judge it by), so a long-gone service's old mark does not send
    the detector back through empty chunks.
    """
    oldest = watermark - timedelta(hours=HISTORY_HOURS)
    behind = [max(m + silence.WINDOW, oldest) for m in marks.values() if m + 2 * silence.WINDOW <= watermark]
    starts = [t for t in [first_unscored, *behind] if t is not None]
    return min(starts) if starts else None


def _progress_marks(windows: pd.DataFrame, marks: dict[str, datetime], through: datetime) -> pd.DataFrame:
    """Each known service is judged through the chunk's last final minute, windows or not."""
    last = windows.groupby("service")["window_start"].max().to_dict() if len(windows) else {}
    judged = pd.Timestamp(through) - silence.WINDOW
    rows = [
        {
            "service": svc,
            "last_window_start": max(pd.Timestamp(t) for t in (last.get(svc), marks.get(svc), judged) if t is not None),
        }
        for svc in sorted(set(last) | set(marks))
    ]
    return pd.DataFrame(rows, columns=["service", "last_window_start"])
