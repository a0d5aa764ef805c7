"""Call controls the control-plane enforces: retries on rejection with back-off, and delays.

`Backoff` is a policy for rejections (the function raised): the control-plane runs the call again
after a growing delay until `attempts` (the first included) are spent, then the caller gets the
last rejection. Give it per call (`CallOptions(retry=...)`) or per function
(`@svc.function(retry=...)`: a call without its own policy gets its function's).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class Backoff:
    """Attempt n + 1 starts `min(max_delay, initial_delay * factor ** (n - 1)) * (1 - jitter * u)`
    seconds after attempt n was rejected, `u` drawn uniformly from [0, 1).

    attempts: 1..100, in all; initial_delay, max_delay: seconds (0..86400); factor >= 1 (<= 100);
    jitter: 0..1, the share of each delay drawn at random (0: exact)."""

    attempts: int
    initial_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= 100:
            raise ValueError("Backoff.attempts must be a whole number from 1 to 100")
        for name, low, high in (("initial_delay", 0, 86400), ("factor", 1, 100), ("max_delay", 0, 86400),
                                ("jitter", 0, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ValueError(f"Backoff.{name} must be a number from {low} to {high}")

    def wire(self) -> Dict[str, Any]:
        """As `retryOnRejection` in a callConfig or a function's definition."""
        return {"attempts": self.attempts, "initialDelaySeconds": self.initial_delay, "factor": self.factor,
                "maxDelaySeconds": self.max_delay, "jitter": self.jitter}


def due_fields(delay: Optional[float], run_at: Optional[dt.datetime]) -> Dict[str, Any]:
    """callConfig's `delaySeconds` or `runAt` (RFC 3339, UTC) for a delay or a due time."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay) or delay < 0:
            raise ValueError("delay must be a number of seconds >= 0")
        return {"delaySeconds": delay}
    if run_at is not None:
        if not isinstance(run_at, dt.datetime):
            raise TypeError("run_at must be a datetime")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValueError("run_at must be timezone-aware (e.g. datetime.now(timezone.utc) + timedelta(...))")
        return {"runAt": run_at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    return {}
