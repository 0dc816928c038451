"""Hand freed memory back to the OS after a large piece of work.

The Spark job's Python processes (the source workers after a range, the driver after a
batch's layers) free what they built, but the allocators keep the pages: the process tree's
RSS then stays at every process's own peak at once, which is what the 2 GB budget of issue
17 counts. Returning them costs a few milliseconds per call; a full garbage collection does
not: it walks every live object (~170,000 in a Spark worker, ~350,000 in the driver), ~90 ms a
call in a worker and ~230 ms in the driver, and there it found nothing to free (refcounting had
freed the range's and batch's objects already; measured on a 1M-event backlog, issue 17). The
Spark job's hot paths hence collect only the young generations.

While a source worker parses and stages a range, the cyclic collector is paused
(`gc_paused`): the range's ~10 Python objects per line (decoded structs, their strings, the
lists of them) are freed by reference counting, but while they live they trigger a young
collection every 700 allocations and, as they age, sweeps of the older generations over every
one of them, for nothing (~0.4-0.7 CPU-µs of a range's ~7 per line, issue 17).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache


@cache
def _libc():
    """The C library already loaded in this process (its symbols, via dlopen(NULL)).

    Not `ctypes.util.find_library`: that runs `ldconfig -p` in a child process, which a memory
    monitor counts at the whole parent's RSS until it execs (issue 17: a ~470 MB driver "child"
    in the Spark job's peak-RSS sample)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def release_memory(gc_generation: int = 2) -> None:
    """Collect garbage (generations up to `gc_generation`; 2 is a full collection), then
    return free pages of Arrow's pool and of malloc to the OS."""
    gc.collect(gc_generation)
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:
        pass
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that builds many short-lived, acyclic
    objects; it runs again as before afterwards (and `release_memory` collects what is left)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
