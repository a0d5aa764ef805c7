"""Admission for big request bodies: few are parsed and worked on at once per process, in order.

The published SDK sends a status poll for every call made while one is open, each carrying every
outstanding id (about 300 KB for 10,000 calls). Parsed, one holds about 1.5 MB; with every request
thread parsing one, a worker reached 337 MB of live Python objects (tracemalloc) though 2 cores
gain nothing from parsing more than one at a time. A big body waits here for its turn, first come
first served. With one slot, each poll parks before the next one is parsed, so the next one
inherits what it read and reads only its new ids. The body is read off the socket while it waits
(raw bytes are a fifth of the parsed size, and a client sending slowly holds no slot) and parsed
in its turn. The route gives its slot back once the request is parked or answered. When too many
already wait, the route answers at once (`refused`), reading the body without parsing it.
"""
from __future__ import annotations

import collections
import logging
import threading

log = logging.getLogger(__name__)


class Ticket:
    """A place in line for a slot (`big`), or nothing to wait for (a small body)."""

    def __init__(self, admission: "BigBodyAdmission | None") -> None:
        self._admission = admission
        self._granted = threading.Event()

    @property
    def big(self) -> bool:
        return self._admission is not None

    def wait(self) -> None:
        """Block until this ticket holds a slot, or give up the place after the wait limit."""
        admission = self._admission
        if admission is None or self._granted.wait(admission.max_wait_seconds):
            return
        with admission._lock:
            if self._granted.is_set():  # granted just as the wait ran out
                return
            admission._waiting.remove(self)
            self._admission = None
        # Slot holders are stuck (a slow database?): better to go ahead than to leave it hanging.
        log.warning("no admission slot for a big body after %.0f s; going ahead", admission.max_wait_seconds)

    def release(self) -> None:
        """Give the slot (or the place in line) back; safe to call more than once."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._leave(self)


_SMALL = Ticket(None)


class BigBodyAdmission:
    def __init__(self, *, threshold_bytes: int, slots: int, max_waiting: int, max_wait_seconds: float = 30.0):
        self.threshold_bytes = threshold_bytes
        self.max_waiting = max_waiting
        self.max_wait_seconds = max_wait_seconds
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: collections.deque[Ticket] = collections.deque()

    def enter(self, content_length: int | None) -> Ticket | None:
        """Take a place in line without waiting: a ticket to `wait()` on and `release()`, or None
        when too many wait already (refused)."""
        if not content_length or content_length < self.threshold_bytes:
            return _SMALL
        ticket = Ticket(self)
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                ticket._granted.set()
            elif len(self._waiting) >= self.max_waiting:
                return None
            else:
                self._waiting.append(ticket)
        return ticket

    def _leave(self, ticket: Ticket) -> None:
        with self._lock:
            if not ticket._granted.is_set():  # left the line before its turn
                self._waiting.remove(ticket)
                return
            # The slot passes straight to the oldest waiter: a newcomer cannot take it first.
            if self._waiting:
                self._waiting.popleft()._granted.set()
            else:
                self._free += 1
