"""Keep freed memory in the process for the next step's tensors, instead of handing it back and faulting it in again.

Why: a prompt chunk of a couple of thousand tokens allocates activations of tens of megabytes per layer
(a 1.5B model's gate/up output alone is 73 MB at 2,048 tokens). glibc serves allocations above its mmap
threshold (32 MB at most) with fresh mappings and unmaps them on free, and returns the top of its heap past
M_TRIM_THRESHOLD, so every step paid the kernel to fault in and zero the same memory again (a visible share
of a prompt-heavy run in a profile). With mmap off for allocations (M_MMAP_MAX = 0) they come from the heap,
whose freed chunks are reused, and a high trim threshold keeps it.

The cost: the process keeps the memory of its largest step after the step ends (the engine's working set; the
KV cache and weights are resident anyway). It applies to the whole process and only with glibc; elsewhere it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""mallopt parameters (glibc's malloc.h)."""
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
"""Free bytes at the top of the heap before glibc returns them (the largest int mallopt takes: ~2 GiB)."""


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory (once per process); False where there is no glibc mallopt."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    logger.info("malloc keeps freed memory for reuse: %s", done)
    return done
