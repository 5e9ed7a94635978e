"""Allocator settings for processes that train many clients: keep freed memory around.

A process that alternates training steps and large evaluation batches makes glibc's
default (dynamic) thresholds map and unmap big buffers over and over; fixing them — what
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do — took a 2-thread CNN loop from
2.58 to 2.03 s per round here (see DESIGN.md). Pool workers and Ray actors set it when they
start; the inline and vectorized backends set it in the process that runs the simulation.

Example:
    >>> isinstance(tune_allocator(), bool)
    True
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["tune_allocator"]

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds in this process (once); False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter itself uses
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
