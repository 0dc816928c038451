"""The generation loop: event-time seconds -> traces -> sink, scenarios -> labels.

Time is event time: second by second from `start`; with speed "realtime"
each second is emitted when the wall clock reaches its end (and the sink is
flushed every second), with "max" as fast as possible, so hours of history
take seconds to minutes.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

from event_generator.labels import LabelSink
from event_generator.scenarios import LabelTracker, Scenario, ScenarioSchedule
from event_generator.traces import TraceBuilder
from event_generator.traffic import TrafficShape, latency_load_factor
from observability import metrics
from observability.logs import get_logger

log = get_logger(__name__)

LABEL_SETTLE_MS = 5000  # spans of traces begun just before a window's end still land in it


@dataclass
class RunConfig:
    rate: float  # root requests per second (daily mean)
    start_ms: int
    duration_s: float | None  # None: until interrupted
    seed: int
    speed: str  # realtime | max
    anomaly_probability: float
    scenarios: list[Scenario] = field(default_factory=list)


@dataclass
class RunResult:
    published: int = 0
    scenarios: list[Scenario] = field(default_factory=list)
    label_rows: int = 0
    seconds: int = 0


class Generator:
    def __init__(self, cfg: RunConfig, sink, labels: LabelSink, progress=None) -> None:
        self.cfg = cfg
        self.sink = sink
        self.labels = labels
        self.progress = progress
        self.rng = random.Random(cfg.seed)
        self.traffic = TrafficShape(cfg.rate, cfg.seed)
        self.schedule = ScenarioSchedule(list(cfg.scenarios), cfg.anomaly_probability, cfg.seed)
        self.tracker = LabelTracker()
        self.builder = TraceBuilder(self.rng, self.schedule, self.tracker)
        self.result = RunResult()
        self._open: list[Scenario] = []  # started, not yet labelled
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def run(self) -> RunResult:
        cfg = self.cfg
        total_s = None if cfg.duration_s is None else int(cfg.duration_s)
        wall0 = time.monotonic()
        last_flush = wall0
        sec = 0
        topic = self.sink.events_topic
        dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
        try:
            while not self._stop and (total_s is None or sec < total_s):
                sec_ms = cfg.start_ms + sec * 1000
                if cfg.speed == "realtime":
                    wait = wall0 + sec + 1 - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                self._advance_scenarios(sec_ms)
                n = self.traffic.requests_in_second(sec_ms // 1000)
                load = latency_load_factor(self.traffic.load)
                offsets = sorted(self.rng.random() for _ in range(n))
                events: list[tuple[int, dict]] = []
                for off in offsets:
                    self.builder.trace(sec_ms + off * 1000.0, load, events)
                for ts_ms, ev in events:
                    self.sink.send(topic, dumps(ev).encode(), ev["trace_id"].encode(), ts_ms)
                self.result.published += len(events)
                metrics.EVENTS_OUT.labels(metrics.GENERATOR, "span").inc(len(events))
                sec += 1
                now = time.monotonic()
                if cfg.speed == "realtime" or now - last_flush >= 1.0:
                    self.sink.flush()
                    last_flush = now
                if self.progress is not None:
                    self.progress.update(1, events=self.result.published)
        finally:
            end_ms = cfg.start_ms + sec * 1000
            self.sink.flush()
            for sc in list(self._open):
                self._finish(sc, min(sc.end_ms, end_ms))
            self.result.seconds = sec
        return self.result

    def _advance_scenarios(self, now_ms: int) -> None:
        started, _ended = self.schedule.advance(now_ms)
        for sc in started:
            self.tracker.watch(sc)
            self._open.append(sc)
            self.result.scenarios.append(sc)
            self.labels.started(sc)
        for sc in list(self._open):
            if sc.end_ms + LABEL_SETTLE_MS <= now_ms:
                self._finish(sc, sc.end_ms)

    def _finish(self, sc: Scenario, end_ms: int) -> None:
        self._open.remove(sc)
        shown = self.tracker.finish(sc)
        self.labels.finished(sc, shown, end_ms)
        self.result.label_rows += len(shown)
