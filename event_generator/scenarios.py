"""Anomaly scenarios: named ones from `--scenario`, random ones at ANOMALY_PROBABILITY.

A scenario is a fault injected into one service for a window of event time:

  error_surge    the service fails 20-40% of its requests (5xx)
  latency_spike  its latency is multiplied by 3.5-5.5
  latency_drift  its latency ramps up linearly to 3.5-4.5x over ~10 minutes, then holds
  traffic_drop   70-90% of its requests stop arriving (for a called service:
                 its callers stop calling it)
  cascade        a downstream fault (by default in `database`): 3-4.5x latency
                 and 20-35% timeouts, which its callers feel as
                 "timeout calling database", up to the entry services

Faults travel the call graph the way real ones do (a child's latency adds to
its parent's, its 5xx usually fails the parent), so a fault can show in the
callers too. Which services *show* a scenario is measured, not guessed: the
generator computes every span twice, with and without the fault, from the
same random draws, and labels each service whose window metrics moved clearly
(see `LabelTracker`).

Spec syntax: `TYPE:SERVICE@START[+DURATION]`, START and DURATION in minutes of
event time after `--start` (decimals allowed), e.g. `error_surge:payments@30`
or `latency_drift:search@60+25`.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

from event_generator import topology

SCENARIO_TYPES = ("error_surge", "latency_spike", "latency_drift", "traffic_drop", "cascade")
DEFAULT_DURATION_MIN = {"error_surge": 10, "latency_spike": 10, "latency_drift": 20, "traffic_drop": 10, "cascade": 10}
RANDOM_DURATION_MIN = {
    "error_surge": (6, 15),
    "latency_spike": (6, 15),
    "latency_drift": (15, 25),
    "traffic_drop": (6, 15),
    "cascade": (6, 15),
}
DRIFT_RAMP_MIN = 10.0
RANDOM_COOLDOWN_MIN = 15.0  # quiet event time after a scenario before a random one may start
# Where random scenarios are injected. Chosen so that every service either
# clearly shows a scenario or clearly does not (measured: a 4x latency fault in
# the database or inventory moves checkout/payments p95 only ~1.3-1.6x, an
# ambiguous middle that named scenarios may still ask for).
RANDOM_TARGETS = {
    "error_surge": ("checkout", "payments", "search", "inventory", "database"),
    "latency_spike": ("checkout", "payments", "search"),
    "latency_drift": ("checkout", "payments", "search"),
    "traffic_drop": ("checkout", "search"),
    "cascade": ("database",),
}

# Label rule: a service other than the injected one is labelled when, pooled
# over the scenario window, it moved at least this much against the
# fault-free counterfactual.
LABEL_MIN_ERROR_RATE_RISE = 0.05
LABEL_MIN_P95_RATIO = 1.5
LABEL_MAX_COUNT_RATIO = 0.8

_SPEC = re.compile(r"^(?P<type>[a-z_]+):(?P<service>[a-z_]+)@(?P<start>\d+(?:\.\d+)?)(?:\+(?P<dur>\d+(?:\.\d+)?))?$")


class ScenarioSpecError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    type: str
    service: str
    start_min: float
    duration_min: float


def parse_spec(text: str) -> ScenarioSpec:
    m = _SPEC.match(text.strip())
    if not m:
        raise ScenarioSpecError(
            f"scenario {text!r}: expected TYPE:SERVICE@START[+DURATION] (minutes), e.g. error_surge:payments@30"
        )
    stype, service = m["type"], m["service"]
    if stype not in SCENARIO_TYPES:
        raise ScenarioSpecError(f"scenario {text!r}: unknown type {stype!r} (one of {', '.join(SCENARIO_TYPES)})")
    if service not in topology.SERVICES:
        raise ScenarioSpecError(
            f"scenario {text!r}: unknown service {service!r} (one of {', '.join(topology.SERVICES)})"
        )
    duration = float(m["dur"]) if m["dur"] else float(DEFAULT_DURATION_MIN[stype])
    if duration <= 0:
        raise ScenarioSpecError(f"scenario {text!r}: duration must be positive")
    return ScenarioSpec(stype, service, float(m["start"]), duration)


@dataclass(slots=True)
class Scenario:
    id: str
    type: str
    service: str  # where the fault is injected (the labels' root_service)
    start_ms: int
    end_ms: int
    error_rate: float = 0.0
    latency_factor: float = 1.0  # peak factor for latency_drift
    drop_rate: float = 0.0
    ramp_ms: int = 0
    origin: str = "named"  # named | random
    errors: tuple[tuple[int, str], ...] = ()

    def latency_at(self, ts_ms: float) -> float:
        if self.type != "latency_drift":
            return self.latency_factor
        frac = min(1.0, max(0.0, (ts_ms - self.start_ms) / self.ramp_ms))
        return 1.0 + (self.latency_factor - 1.0) * frac

    def magnitude(self) -> dict:
        out = {}
        if self.error_rate:
            out["error_rate"] = round(self.error_rate, 3)
        if self.latency_factor != 1.0:
            out["latency_factor"] = round(self.latency_factor, 3)
        if self.drop_rate:
            out["drop_rate"] = round(self.drop_rate, 3)
        if self.ramp_ms:
            out["ramp_minutes"] = round(self.ramp_ms / 60000, 2)
        return out


def make_scenario(
    stype: str, service: str, start_ms: int, end_ms: int, rng: random.Random, origin: str = "named"
) -> Scenario:
    """Draw the magnitude of a scenario (deterministic given `rng`)."""
    digest = hashlib.sha1(f"{stype}|{service}|{start_ms}|{rng.getrandbits(64)}".encode()).hexdigest()[:12]
    sc = Scenario(
        id=f"{stype}-{service}-{start_ms}-{digest}",
        type=stype,
        service=service,
        start_ms=start_ms,
        end_ms=end_ms,
        origin=origin,
    )
    if stype == "error_surge":
        sc.error_rate = rng.uniform(0.20, 0.40)
        sc.errors = topology.SERVER_ERRORS[service]
    elif stype == "latency_spike":
        sc.latency_factor = rng.uniform(3.5, 5.5)
    elif stype == "latency_drift":
        sc.latency_factor = rng.uniform(3.5, 4.5)
        sc.ramp_ms = int(min(DRIFT_RAMP_MIN * 60000, 0.6 * (end_ms - start_ms)))
    elif stype == "traffic_drop":
        sc.drop_rate = rng.uniform(0.70, 0.90)
    elif stype == "cascade":
        sc.latency_factor = rng.uniform(3.0, 4.5)
        sc.error_rate = rng.uniform(0.20, 0.35)
        sc.errors = topology.CASCADE_ERRORS if service == "database" else topology.SERVER_ERRORS[service]
    else:  # pragma: no cover - parse_spec guards it
        raise ScenarioSpecError(stype)
    return sc


@dataclass(slots=True)
class Effect:
    """The combined fault on one service at one instant."""

    error_rate: float = 0.0
    latency_factor: float = 1.0
    drop_rate: float = 0.0
    errors: tuple[tuple[int, str], ...] = ()


NO_EFFECT = Effect()


class ScenarioSchedule:
    """Named scenarios plus random injection, and which are active when.

    Random injection: at each event-time minute, while no scenario is running
    and at least RANDOM_COOLDOWN_MIN minutes after the last one ended, a
    random scenario starts with probability `anomaly_probability`.
    """

    def __init__(self, named: list[Scenario], anomaly_probability: float, seed: int) -> None:
        self.pending = sorted(named, key=lambda s: s.start_ms)
        self.active: list[Scenario] = []
        self.all: list[Scenario] = []
        self.probability = anomaly_probability
        self._rng = random.Random(f"scenarios:{seed}")
        self._last_minute: int | None = None
        self._quiet_until_ms = 0
        self.by_service: dict[str, list[Scenario]] = {}

    def advance(self, now_ms: int) -> tuple[list[Scenario], list[Scenario]]:
        """Move to event time `now_ms`: returns (started, ended) scenarios."""
        started, ended = [], []
        minute = now_ms // 60000
        if self.probability > 0 and minute != self._last_minute:
            self._last_minute = minute
            draw = self._rng.random()
            if not self.active and now_ms >= self._quiet_until_ms and draw < self.probability:
                self.pending.append(self._random_scenario(minute * 60000))
                self.pending.sort(key=lambda s: s.start_ms)
        while self.pending and self.pending[0].start_ms <= now_ms:
            sc = self.pending.pop(0)
            self.active.append(sc)
            self.all.append(sc)
            started.append(sc)
        for sc in list(self.active):
            if sc.end_ms <= now_ms:
                self.active.remove(sc)
                ended.append(sc)
                self._quiet_until_ms = max(self._quiet_until_ms, sc.end_ms + int(RANDOM_COOLDOWN_MIN * 60000))
        if started or ended:
            self.by_service = {}
            for sc in self.active:
                self.by_service.setdefault(sc.service, []).append(sc)
        return started, ended

    def _random_scenario(self, start_ms: int) -> Scenario:
        rng = self._rng
        stype = rng.choice(SCENARIO_TYPES)
        service = rng.choice(RANDOM_TARGETS[stype])
        lo, hi = RANDOM_DURATION_MIN[stype]
        minutes = rng.randint(lo, hi)
        return make_scenario(stype, service, start_ms, start_ms + minutes * 60000, rng, origin="random")

    def effect(self, service: str, ts_ms: float) -> Effect:
        scs = self.by_service.get(service)
        if not scs:
            return NO_EFFECT
        eff = Effect()
        for sc in scs:
            if not sc.start_ms <= ts_ms < sc.end_ms:
                continue
            if sc.error_rate:
                eff.error_rate = 1 - (1 - eff.error_rate) * (1 - sc.error_rate)
                eff.errors = sc.errors
            eff.latency_factor *= sc.latency_at(ts_ms)
            if sc.drop_rate:
                eff.drop_rate = 1 - (1 - eff.drop_rate) * (1 - sc.drop_rate)
        return eff


@dataclass(slots=True)
class _Acc:
    base_count: int = 0
    count: int = 0
    base_errors: int = 0
    errors: int = 0
    base_latencies: list = field(default_factory=list)
    latencies: list = field(default_factory=list)


def _p95(values: list) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * (len(values) - 1) + 0.5))]


class LabelTracker:
    """Measures, per scenario and service, actual vs fault-free metrics over the window."""

    def __init__(self) -> None:
        self._acc: dict[str, dict[str, _Acc]] = {}
        self._windows: list[Scenario] = []

    def watch(self, sc: Scenario) -> None:
        self._acc[sc.id] = {s: _Acc() for s in topology.SERVICES}
        self._windows.append(sc)

    @property
    def watching(self) -> bool:
        return bool(self._windows)

    def observe(
        self,
        service: str,
        ts_ms: float,
        base_latency: float,
        latency: float,
        base_error: bool,
        error: bool,
        emitted: bool,
    ) -> None:
        for sc in self._windows:
            if sc.start_ms <= ts_ms < sc.end_ms:
                acc = self._acc[sc.id][service]
                acc.base_count += 1
                acc.base_latencies.append(base_latency)
                acc.base_errors += base_error
                if emitted:
                    acc.count += 1
                    acc.latencies.append(latency)
                    acc.errors += error

    def finish(self, sc: Scenario) -> list[dict]:
        """Stop watching `sc`; returns one evidence dict per service that shows it."""
        self._windows = [w for w in self._windows if w.id != sc.id]
        accs = self._acc.pop(sc.id, {})
        shown = []
        for service, acc in accs.items():
            ev = evidence(acc)
            visible = (
                ev["error_rate_rise"] >= LABEL_MIN_ERROR_RATE_RISE
                or (ev["p95_ratio"] is not None and ev["p95_ratio"] >= LABEL_MIN_P95_RATIO)
                or (ev["count_ratio"] is not None and ev["count_ratio"] <= LABEL_MAX_COUNT_RATIO)
            )
            if service == sc.service or visible:
                shown.append({"service": service, **ev})
        return shown


def evidence(acc: _Acc) -> dict:
    base_rate = acc.base_errors / acc.base_count if acc.base_count else 0.0
    rate = acc.errors / acc.count if acc.count else 0.0
    bp95, p95 = _p95(acc.base_latencies), _p95(acc.latencies)
    return {
        "requests": acc.count,
        "requests_fault_free": acc.base_count,
        "count_ratio": round(acc.count / acc.base_count, 3) if acc.base_count else None,
        "error_rate": round(rate, 4),
        "error_rate_fault_free": round(base_rate, 4),
        "error_rate_rise": round(rate - base_rate, 4),
        "p95_ratio": round(p95 / bp95, 3) if p95 and bp95 else None,
    }
