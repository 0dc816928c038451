"""Decoding and mapping requests, in worker processes (OTLP_WORKERS) or in the receiver's own process.

Mapping costs ~7 CPU-µs per span in Python, the receiver's largest cost, and
one process can use one core at most (the GIL). With OTLP_WORKERS > 0 the
request bytes go to a pool of worker processes that decode and map them and
send back the encoded records; the receiver's process keeps the servers and
the single publisher. Workers are spawned (not forked: gRPC's threads do not
survive a fork) before the servers start. A worker that dies (a hostile input
crashing the decoder, the OOM killer) costs that one request a 500, and the
pool is replaced; the receiver keeps serving.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ingest import otlp_json
from ingest.mapping import Mapped
from ingest.signals import SIGNALS
from observability.logs import get_logger

log = get_logger(__name__)

JSON = "application/json"
_BY_NAME = {s.name: s for s in SIGNALS}


class WorkerCrashed(RuntimeError):
    """The worker process mapping this request died; the pool was replaced."""


def decode_and_map(signal_name: str, media: str, body: bytes, topic: str) -> Mapped:
    """Request bytes -> Mapped; raises DecodeError / OtlpJsonError for a body that does not decode."""
    signal = _BY_NAME[signal_name]
    if media == JSON:
        message = otlp_json.parse(body, signal.request_type())
    else:
        message = signal.request_type.FromString(body)
    return signal.map(message, topic)


def _warm() -> None:
    """Worker initializer: import the generated classes once, before the first request."""
    import ingest.mapping  # noqa: F401


class Mapper:
    """`submit(...)` -> a Future of `Mapped`, from the pool or computed in place (workers == 0)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool() if workers > 0 else None

    def _new_pool(self, warm: bool = True) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm)
        if warm:
            for f in [pool.submit(_warm) for _ in range(self.workers)]:
                f.result()  # start them now, not on the first request
        return pool

    def submit(self, signal_name: str, media: str, body: bytes, topic: str) -> Future:
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(decode_and_map(signal_name, media, body, topic))
            except BaseException as exc:  # delivered to the caller, as from a worker
                fut.set_exception(exc)
            return fut
        pool = self._pool
        try:
            inner = pool.submit(decode_and_map, signal_name, media, body, topic)
        except (BrokenProcessPool, RuntimeError):
            self._replace(pool)
            inner = self._pool.submit(decode_and_map, signal_name, media, body, topic)
        outer: Future = Future()

        def done(f: Future) -> None:
            exc = f.exception()
            if isinstance(exc, BrokenProcessPool):
                self._replace(pool)
                outer.set_exception(WorkerCrashed(f"a mapping worker died: {exc}"))
            elif exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(f.result())

        inner.add_done_callback(done)
        return outer

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                log.warning("mapping worker pool broken, replacing it", workers=self.workers)
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool(warm=False)  # (may run in the broken pool's callback thread)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
