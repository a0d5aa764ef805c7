"""File descriptors: each open connection is one, so the limit bounds how many silent or idle
clients a worker can hold. Distributions start processes with a soft limit of 1024 and allow far
more; we take what the hard limit allows, and size gunicorn's worker_connections to fit in it."""
from __future__ import annotations

import resource

# Descriptors a worker needs besides its clients: database connections, the LISTEN connection,
# logs, pipes, imported files.
RESERVED = 512


def raise_soft_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (inherited by the workers); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # e.g. a kernel cap below the hard limit: keep what we have
    return soft


def worker_connections(wanted: int, fd_limit: int) -> int:
    """`wanted`, or as many as fit under `fd_limit` next to what a worker needs otherwise."""
    return max(64, min(wanted, fd_limit - RESERVED))
