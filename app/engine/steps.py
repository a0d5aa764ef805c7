"""Long polls written once as generators, run either in a thread that sleeps or by a server that parks.

A long poll's loop (read, and if nothing is there yet, wait for a wake-up) is a generator that
yields `Wait(sub, seconds)` where it would sleep and is sent back what `sub.wait` would have
returned (the topics that fired, or None: re-check everything). `finish` drives it in the calling
thread, sleeping in `sub.wait` (a test client, gthread behind TLS). The HTTP worker (server/worker.py) instead keeps the suspended
generator, with its connection, in its event loop: no thread is held while the poll waits, and the
generator resumes in a pool thread once the subscription wakes or the wait is over. Everything the
poll holds (its subscription, its place in the poll budget) is held by the generator's `with`
blocks, so closing an abandoned generator gives it back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generator, TypeVar

from .signals import Subscription

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep up to `seconds`, or until `sub` wakes (no subscription: a plain pause)."""

    sub: Subscription | None
    seconds: float

    def block(self) -> set[str] | None:
        """Sleep in this thread; what the generator is sent next."""
        if self.sub is None:
            time.sleep(max(0.0, self.seconds))
            return None
        return self.sub.wait(self.seconds)

    def timer_seconds(self) -> float:
        """How long a parked poll sleeps before it resumes anyway (capped as `sub.wait` caps it)."""
        return self.seconds if self.sub is None else self.sub.wait_seconds(self.seconds)

    def outcome(self) -> set[str] | None:
        """What a parked poll resuming now is sent: the wait's result, without waiting."""
        return None if self.sub is None else self.sub.wait(0)


Steps = Generator[Wait, "set[str] | None", T]


def finish(steps: Steps[T], wait: Wait) -> T:
    """Drive a started long poll, which yielded `wait`, to its answer in this thread."""
    try:
        while True:
            wait = steps.send(wait.block())
    except StopIteration as done:
        return done.value
