"""Keep freed CPU memory in the process rather than handing it back to the OS every step.

glibc's malloc serves large blocks (above a threshold that adapts up to 32 MB) with ``mmap``
and returns them with ``munmap`` on free, and trims the top of its heap whenever more than
twice that threshold is free. A training step frees most of its activations at the end of
the backward pass, so on the next step every page of them is requested from the kernel again
and zero-filled on first touch. For a packed ensemble (K times a run's activations) that
cost dominated: ``benchmarks/packing_model.py`` measured up to ~300K page faults and more
system than user time per step (``benchmarks/results/packing_model.json``, ``default`` against
``retain``). Serving every block from the heap and never trimming it makes a step reuse the
previous step's pages; the process then holds its peak memory until it exits, which is what a
training process does anyway.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Largest trim threshold ``mallopt`` takes (an int): keep up to 2 GiB of free heap top.
_TRIM_THRESHOLD = 2**31 - 1


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where that is not possible.

    Process-wide and permanent, so call it once at the start of a training process. A no-op
    (False) outside Linux/glibc, e.g. on macOS or musl, where the allocators behave otherwise.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
