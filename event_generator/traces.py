"""Builds one trace: a root request and the spans it causes down the call graph.

Every span is computed twice from the same random draws: as it happens (with
the active faults) and fault-free. The emitted event is the first; the second
feeds the ground-truth labels (`scenarios.LabelTracker`). Each span draws the
same random numbers whatever the faults, so a run with scenarios is exactly
the fault-free run plus the faults, and `--seed` reproduces both.
"""

from __future__ import annotations

import math
import random

from event_generator import topology
from event_generator.scenarios import NO_EFFECT, LabelTracker, ScenarioSchedule
from observability.schema import TimestampFormatter

_MU = {(s, name): math.log(ep.self_ms) for s, eps in topology.ENDPOINTS.items() for name, ep in eps.items()}


class TraceBuilder:
    def __init__(self, rng: random.Random, schedule: ScenarioSchedule, tracker: LabelTracker) -> None:
        self.rng = rng
        self.schedule = schedule
        self.tracker = tracker
        self.fmt = TimestampFormatter()
        self._roots = sorted(topology.ROOT_SHARES.items())
        self._entry = {s: topology.entry_endpoints(s) for s in topology.ROOT_SHARES}

    def trace(self, start_ms: float, latency_load: float, out: list[dict]) -> None:
        """Append (timestamp_ms, event) for the emitted spans of one root request (children first)."""
        r = self.rng
        u = r.random()
        acc = 0.0
        service = self._roots[-1][0]
        for name, share in self._roots:
            acc += share
            if u < acc:
                service = name
                break
        eps, weights = self._entry[service]
        ep = r.choices(eps, weights)[0]
        trace_id = "%032x" % (r.getrandbits(128) | 1)
        self._span(service, ep, start_ms, None, trace_id, latency_load, True, out)

    def _span(self, service, ep, start, parent_id, trace_id, load, parent_emitted, out):
        """Returns (base_latency, latency, base_status, status, message, emitted)."""
        r = self.rng
        schedule = self.schedule
        eff = schedule.effect(service, start) if schedule.by_service else NO_EFFECT
        # Same draws every time, faults or not.
        span_id = f"{r.getrandbits(64) | 1:016x}"
        event_id = f"{r.getrandbits(128):032x}"
        self_ms = r.lognormvariate(_MU[(service, ep.name)], ep.sigma) * load
        pre = self_ms * (0.2 + 0.4 * r.random())  # self time spent before the first call
        rnd = r.random
        u_err, u_inj, u_client, u_prop, u_msg, u_drop = rnd(), rnd(), rnd(), rnd(), rnd(), rnd()
        host = r.randrange(topology.HOSTS_PER_SERVICE)

        emitted = parent_emitted and not (eff.drop_rate and u_drop < eff.drop_rate)

        # Children, called one after another.
        base_children = 0.0
        children = 0.0
        t = start + pre
        base_fail = fail = None  # the first failing child (fault-free / actual)
        client = None  # the first child client-error message
        for child_service, child_ep_name in ep.calls:
            child_ep = topology.ENDPOINTS[child_service][child_ep_name]
            b_lat, lat, b_status, status, msg, child_emitted = self._span(
                child_service, child_ep, t, span_id, trace_id, load, emitted, out
            )
            base_children += b_lat
            if b_status >= 500 and base_fail is None:
                base_fail = child_service
            if child_emitted:
                children += lat
                t += lat
                if status >= 500 and fail is None:
                    fail = (child_service, status, msg)
                elif 400 <= status < 500 and client is None:
                    client = msg

        base_latency = self_ms + base_children
        latency = (self_ms + children) * eff.latency_factor

        # Outcome, in precedence order: own 5xx, child 5xx, own 4xx, child 4xx.
        own_error = u_err < topology.BASE_SERVER_ERROR[service]
        server_errors = topology.SERVER_ERRORS[service]
        # Fault-free outcome: only whether it is a server error matters (labels).
        base_status = 500 if own_error or (base_fail and u_prop < topology.FAIL_PARENT_PROBABILITY) else 200
        status, message = 200, None
        injected = eff.error_rate and u_inj < eff.error_rate
        if own_error or injected:
            pool = eff.errors if injected and eff.errors else server_errors
            status, message = pool[int(u_msg * len(pool))]
        elif fail and u_prop < topology.FAIL_PARENT_PROBABILITY:
            child_service, child_status, _ = fail
            if child_status == 504:
                status, message = 504, f"timeout calling {child_service}"
            else:
                status, message = 502, f"upstream {child_service} returned {child_status}"
        else:
            cumulative = 0.0
            for ce in ep.client_errors:
                cumulative += ce.probability
                if u_client < cumulative:
                    status, message = ce.status, ce.message
                    break
            if status == 200 and client is not None:
                status, message = topology.CLIENT_ERROR_PROPAGATION.get(client, (400, client))

        if self.tracker.watching:
            self.tracker.observe(service, start, base_latency, latency, base_status >= 500, status >= 500, emitted)

        if emitted:
            attributes = dict(ep.attributes)
            attributes["host"] = f"{service}-{host}"
            ts_ms = int(start)
            out.append(
                (
                    ts_ms,
                    {
                        "event_id": event_id,
                        "timestamp": self.fmt(ts_ms),
                        "service": service,
                        "endpoint": ep.name,
                        "status_code": status,
                        "latency_ms": round(latency, 3),
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "parent_span_id": parent_id,
                        "error_message": message,
                        "attributes": attributes,
                    },
                )
            )
        return base_latency, latency, base_status, status, message, emitted
