"""A per-process budget of request-body bytes: big bodies being read or held at once are bounded.

Each route caps its own body, but a process may run hundreds of request threads: 256 threads each
reading (then holding, parsed, for a parked long poll) an 8 MiB body is gigabytes. A body of
`threshold_bytes` or more takes its size from this budget before it is read and gives it back when
its request ends; past the budget it waits up to `max_wait_seconds` for bytes to come back, then
is refused (the route answers 503 with Retry-After, or its own refusal). Smaller bodies take
nothing: their total is bounded by the thread count. A body larger than the whole budget takes
the whole budget (it runs alone).
"""
from __future__ import annotations

import threading


class Grant:
    """Bytes taken from a budget; `release()` gives them back (safe to call more than once)."""

    def __init__(self, budget: "BodyBudget | None", nbytes: int) -> None:
        self._budget, self.nbytes = budget, nbytes

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.nbytes)


_NOTHING = Grant(None, 0)


class BodyBudget:
    def __init__(self, *, capacity_bytes: int, threshold_bytes: int, max_wait_seconds: float = 2.0):
        self.capacity_bytes = capacity_bytes
        self.threshold_bytes = threshold_bytes
        self.max_wait_seconds = max_wait_seconds
        self._free = capacity_bytes
        self._changed = threading.Condition()

    def take(self, nbytes: int) -> Grant | None:
        """Take `nbytes` (a body's size, or the most it may be), waiting briefly if the budget is
        spent; None when it stayed spent (refuse the request)."""
        if nbytes < self.threshold_bytes:
            return _NOTHING
        nbytes = min(nbytes, self.capacity_bytes)
        with self._changed:
            if not self._changed.wait_for(lambda: self._free >= nbytes, self.max_wait_seconds):
                return None
            self._free -= nbytes
        return Grant(self, nbytes)

    @property
    def free_bytes(self) -> int:
        return self._free

    def _give_back(self, nbytes: int) -> None:
        with self._changed:
            self._free += nbytes
            self._changed.notify_all()
