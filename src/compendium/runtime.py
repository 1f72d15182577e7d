"""Process-wide settings the package applies where its work runs (chapter kernels, tests, benches).

**glibc's allocator.** By default glibc serves every block above its mmap threshold (128 KiB,
raised dynamically up to 32 MiB) with a fresh ``mmap`` and hands it back to the OS on
``free``; a training step that allocates the same large activation and gradient buffers every
step then page-faults all of them in again, every step. :func:`tune_allocator` raises the mmap
threshold to 256 MiB and the trim threshold to 512 MiB (what ``MALLOC_MMAP_THRESHOLD_=268435456
MALLOC_TRIM_THRESHOLD_=536870912`` would set at process start) through ``mallopt``, so that
freed buffers stay in the heap and are reused. It is called when :mod:`compendium` is imported,
so every process that runs the package's code gets it however it was started (the runner's
kernels, pytest, the benches); ``COMPENDIUM_MALLOC=0`` leaves glibc's defaults, and explicit
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment win.
``bench/allocator.py`` measures the effect on chapter-sized training.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 256 * 1024 * 1024
TRIM_THRESHOLD = 512 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers

applied: dict[str, int] = {}  # what tune_allocator set, for the environment record


def tune_allocator() -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds (see the module docstring); returns what was set
    (empty where nothing was: not glibc, disabled, or set by the environment)."""
    if applied or os.environ.get("COMPENDIUM_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return dict(applied)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                              ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if env not in os.environ and mallopt(param, value) == 1:
            applied[env] = value
    return dict(applied)
