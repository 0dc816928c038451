"""Traffic shape: a daily curve with gentle, realistic noise.

The root-request rate at event time t is

    rate * daily(t) * exp(ar_t)

where `daily` is a smooth 24 h curve with mean 1 (peak ~15:00 UTC at 1.45x,
trough ~03:00 UTC at 0.55x) and `ar_t` an AR(1) process per minute (standard
deviation ~3%), so the load wanders a little minute to minute without ever
spiking. Counts per second are Poisson around that rate. The noise is kept
modest on purpose: 24 h of clean traffic must not look anomalous to a sane
detector.
"""

from __future__ import annotations

import math

import numpy as np

DAILY_AMPLITUDE = 0.45
PEAK_HOUR_UTC = 15.0
AR_PHI = 0.8
AR_SIGMA = 0.02  # innovation; stationary sd = 0.02 / sqrt(1 - 0.64) ~= 0.033
LOAD_LATENCY_FACTOR = 0.10  # latency rises 10% of the load excess (busier = a bit slower)


def daily_factor(epoch_s: float) -> float:
    """Smooth day curve with mean 1 over 24 h."""
    hour = (epoch_s % 86400) / 3600.0
    return 1.0 + DAILY_AMPLITUDE * math.sin(2 * math.pi * (hour - PEAK_HOUR_UTC + 6.0) / 24.0)


def latency_load_factor(load: float) -> float:
    return 1.0 + LOAD_LATENCY_FACTOR * (load - 1.0)


class TrafficShape:
    """Deterministic per-second root-request counts (own numpy Generator)."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self._rng = np.random.default_rng([seed, 0x7AFF1C])
        self._minute: int | None = None
        self._ar = 0.0
        self.load = 1.0

    def _advance_minute(self, minute: int) -> None:
        if self._minute is None:
            # start at a draw from the stationary distribution
            self._ar = float(self._rng.normal(0.0, AR_SIGMA / math.sqrt(1 - AR_PHI**2)))
        else:
            for _ in range(min(minute - self._minute, 120)):
                self._ar = AR_PHI * self._ar + float(self._rng.normal(0.0, AR_SIGMA))
        self._minute = minute

    def requests_in_second(self, epoch_s: int) -> int:
        """Number of root requests whose trace starts in this event-time second."""
        minute = epoch_s // 60
        if minute != self._minute:
            self._advance_minute(minute)
        self.load = daily_factor(epoch_s) * math.exp(self._ar)
        return int(self._rng.poisson(self.rate * self.load))
