"""When to retry a request to the control-plane, and how long to wait before the next try.

One policy for every path: the blocking and the asyncio callers' job creation, the result
poller, and the worker's polls and result reports. The functions here only compute; the caller
sleeps (`time.sleep`) or awaits (`asyncio.sleep`) the delays they give.
"""
from __future__ import annotations

import random
import time
from typing import Callable, Iterator, Optional

import httpx

from .errors import ConnectionFailedError, ControlPlaneError

# (base, cap) of each back-off, in seconds.
CREATE = (0.1, 3.0)  # job creation: short, it runs inside a call
RESULT_POLL = (0.2, 5.0)  # the callers' batch status long polls
WORKER_POLL = (0.2, 10.0)  # the worker's /jobs-request long polls
REPORT = (0.1, 5.0)  # the worker's result POSTs


def is_retryable(exc: BaseException) -> bool:
    """Network errors, timeouts, 5xx and 429 are worth retrying; other 4xx are not."""
    if isinstance(exc, (httpx.TransportError, ConnectionFailedError)):
        return True
    if isinstance(exc, ControlPlaneError):
        return exc.status >= 500 or exc.status in (408, 429)
    return False


class Backoff:
    """Capped exponential back-off with full jitter; `reset()` after a success."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 20)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def delays(budget: float, policy: "tuple[float, float]" = CREATE,
           clock: Callable[[], float] = time.monotonic) -> Iterator[float]:
    """The back-off delays that still end within `budget` seconds from now; it stops (so the
    caller gives up) when the next delay would end past that deadline."""
    deadline = clock() + budget
    backoff = Backoff(*policy)
    while True:
        delay = backoff.next_delay()
        if clock() + delay > deadline:
            return
        yield delay


def next_delay(error: BaseException, schedule: Iterator[float]) -> Optional[float]:
    """How long to wait before retrying after `error`, or None to give up (not retryable, or
    the schedule has run out)."""
    return next(schedule, None) if is_retryable(error) else None
