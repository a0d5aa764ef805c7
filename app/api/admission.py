"""Admission for big request bodies: a few are read and worked on at once per process, in order.

The published SDK sends a status poll for every call made while one is open, each carrying every
outstanding id (about 300 KB for 10,000 calls). Parsed, one holds about 1.5 MB; with every request
thread parsing one, a worker reached 337 MB of live Python objects (tracemalloc) though 2 cores
gain nothing from parsing more than a few at once. A big body waits here unread, first come first
served, so each poll still supersedes the one before it; the route gives its slot back once the
request is parked (it then holds one parsed copy and no CPU) or answered. When too many already
wait, the route answers at once (`refused`), reading the body off the socket without parsing it.
"""
from __future__ import annotations

import collections
import logging
import threading

log = logging.getLogger(__name__)


class Ticket:
    """A slot, or none (`admitted` False: small body, or admitted by the wait limit)."""

    def __init__(self, admission: "BigBodyAdmission | None") -> None:
        self._admission = admission
        self._granted = threading.Event()

    @property
    def admitted(self) -> bool:
        return self._admission is not None

    def release(self) -> None:
        """Give the slot back; safe to call more than once."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release()


_NO_SLOT = Ticket(None)


class BigBodyAdmission:
    def __init__(self, *, threshold_bytes: int, slots: int, max_waiting: int, max_wait_seconds: float = 30.0):
        self.threshold_bytes = threshold_bytes
        self.max_waiting = max_waiting
        self._max_wait = max_wait_seconds
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: collections.deque[Ticket] = collections.deque()

    def enter(self, content_length: int | None) -> Ticket | None:
        """A ticket to go ahead with (hold its slot until `release`), or None: refused, too many wait."""
        if not content_length or content_length < self.threshold_bytes:
            return _NO_SLOT
        ticket = Ticket(self)
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return ticket
            if len(self._waiting) >= self.max_waiting:
                return None
            self._waiting.append(ticket)
        if ticket._granted.wait(self._max_wait):
            return ticket
        with self._lock:
            if ticket._granted.is_set():  # granted just as the wait ran out
                return ticket
            self._waiting.remove(ticket)
        # Slot holders are stuck (a slow database?): better to go ahead than to leave it hanging.
        log.warning("no admission slot for a %d-byte body after %.0f s; going ahead", content_length, self._max_wait)
        return _NO_SLOT

    def _release(self) -> None:
        # The slot passes straight to the oldest waiter: a newcomer cannot take it first.
        with self._lock:
            if self._waiting:
                self._waiting.popleft()._granted.set()
            else:
                self._free += 1
