"""glibc malloc tuning for the threaded server process.

With hundreds of request threads, glibc gives threads up to 8 arenas per core, and it raises its
mmap threshold each time a big block is freed, so later big blocks (request bodies, id lists and
sets, libpq results of large status polls) come from those arenas and stay there, fragmented,
after the request ends. Under the published SDK's 10,000-call storm that left each worker at
0.7-1.4 GB of RSS while Python itself held about 100 MB (tracemalloc, smaps; bench/README.md).

Two arenas and a fixed 64 KiB mmap threshold (big blocks are mapped and unmapped on their own)
keep RSS near what is live. Call `tune()` before the process starts threads: glibc fixes the
arena limit when a second arena is first needed. A parameter the operator set through glibc's
own environment variable is left as set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 64 * 1024

_PARAMETERS = (
    ("MALLOC_ARENA_MAX", _M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
)


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None  # musl and macOS have no mallopt
    except OSError:
        return None


def supported() -> bool:
    return _libc() is not None


def tune() -> dict[str, int]:
    """Apply the settings this platform supports; returns what was set (empty when none was)."""
    libc = _libc()
    if libc is None:
        return {}
    applied = {}
    for env_name, parameter, value in _PARAMETERS:
        if env_name in os.environ:
            continue
        if libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
            applied[env_name] = value
    return applied
