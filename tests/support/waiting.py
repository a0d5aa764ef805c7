"""Bounded waiting for the tests: one `wait_until` for every folder (it had three copies)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, *,
               what: str = "condition", tolerate: tuple[type[BaseException], ...] = ()) -> T:
    """Poll `predicate` until it returns something truthy, and return that; AssertionError naming
    `what` after `timeout` seconds. Exceptions of the `tolerate` types (a server that is
    restarting) count as "not yet", and the last one is named if time runs out."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except tolerate as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)
