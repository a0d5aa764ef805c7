"""Admission for big request bodies: only a few are parsed and worked on at once per process.

The published SDK can send thousands of overlapping status polls, each carrying every outstanding
call's id (about 290 KB for 10,000 calls). Parsed, such a poll holds a copy of all its ids, and
hundreds of threads parsing at once drove a worker past 600 MB though two cores gain nothing from
it. A big body waits here, unread, until a slot is free; the route gives its slot back as soon as
the request is parked (a parked poll holds one copy, not a parse in progress) or answered.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


class BigBodyAdmission:
    def __init__(self, *, threshold_bytes: int, slots: int, max_wait_seconds: float = 30.0) -> None:
        self.threshold_bytes = threshold_bytes
        self._slots = threading.BoundedSemaphore(slots)
        self._max_wait = max_wait_seconds

    def enter(self, content_length: int | None) -> Callable[[], None]:
        """Wait for a slot if the body is big; returns the release (safe to call more than once)."""
        if not content_length or content_length < self.threshold_bytes:
            return _nothing
        if not self._slots.acquire(timeout=self._max_wait):
            # Better to work on it unadmitted than to leave the request hanging.
            log.warning("no admission slot for a %d-byte body after %.0f s; going ahead", content_length,
                        self._max_wait)
            return _nothing
        lock, released = threading.Lock(), [False]

        def release() -> None:
            with lock:
                if released[0]:
                    return
                released[0] = True
            self._slots.release()

        return release
