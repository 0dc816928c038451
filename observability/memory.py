"""Hand freed memory back to the OS after a large piece of work.

The Spark job's Python processes (the source workers after a range, the driver after a
batch's layers) free what they built, but the allocators keep the pages: the process tree's
RSS then stays at every process's own peak at once, which is what the 2 GB budget of issue
17 counts. Returning them costs a few milliseconds per call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_memory() -> None:
    """Collect garbage, then return free pages of Arrow's pool and of malloc to the OS."""
    gc.collect()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except ImportError:
        pass
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
