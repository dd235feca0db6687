"""How a detector process uses memory: the garbage collector settled, glibc's arenas capped,
freed memory handed back.

The first two are set once per process by ``run`` (the garbage collector also by ``demo``);
the pipeline hands memory back after each checkpoint. Where the C library is not glibc the
malloc calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

#: glibc's ``mallopt`` parameter for the most malloc arenas (``M_ARENA_MAX``).
M_ARENA_MAX = -8
#: Arenas allowed: glibc's default is eight per core, one for each thread that allocates while
#: another holds an arena. The detector's threads (the consumer's and the outbox's network
#: I/O, the metrics server, the state reader) then each keep what they freed in an arena of
#: their own. RSS growth a stream at a million streams (``python bench/pipeline.py
#: --only-memory``, one run each): neither this nor ``release_free_memory`` 285 and 289 bytes,
#: the cap alone 252 and 275, the release alone 216, both 175 and 177. The interpreter's lock
#: means two threads rarely allocate at once: no throughput was lost (``--only-workloads``).
ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas, before the process starts its threads (later threads obey
    it). False where the C library is not glibc."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_ARENA_MAX, arenas))


def release_free_memory() -> None:
    """Hand what malloc holds freed back to the system (glibc's ``malloc_trim``).

    A poll's transient buffers (fetched records, output and state records, numpy
    temporaries) are freed between the long-lived ones, and glibc keeps freed pages that are
    not at the top of a heap: at a million streams 75-100 bytes a stream of RSS (see
    ``ARENAS``). Called after each checkpoint (every 2 s by default); a call took 2.2 ms
    (median; 8 ms at most) in a detector holding 300,000 streams at 20,000 events/s.
    """
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


def settle_garbage_collector() -> None:
    """Keep the garbage collector from stopping the process for tens of milliseconds, often.

    Measured with TensorFlow loaded: about a million long-lived objects, a full collection
    every 2-3 s of 200-300 ms at 5,000 events/s, which was the whole p99 latency. With LiteRT
    (``python bench/startup.py --sections gc``) about 49,000 objects remain, yet at 5,000
    events/s over 1,000 streams Python's default thresholds still ran about 3,000 collections
    in 30 s (23-24 full, the longest 50 ms, 1.3-1.5 s in all); frozen, with a larger young
    generation, none or one (36 ms). So it stays. Call once per process, after the model is
    loaded and the clients are up.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
