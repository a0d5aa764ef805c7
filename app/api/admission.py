"""Admission for big request bodies: few are parsed and worked on at once per process, in turn.

The published SDK sends a status poll for every call made while one is open, each carrying every
outstanding id (about 300 KB for 10,000 calls). Parsed, one holds about 1.5 MB; with every request
thread parsing one, a worker reached 337 MB of live Python objects (tracemalloc) though 2 cores
gain nothing from parsing more than one at a time. A big body waits here for its turn. The body is
read off the socket while it waits (raw bytes are a fifth of the parsed size, and a client sending
slowly holds no slot) and parsed in its turn. With one slot, each poll parks before the next one
is parsed, so the next one inherits what it read and reads only its new ids. The route gives its
slot back once the request is parked or answered.

Each cluster has its own line, and the lines take turns (engine/fairness.py): one cluster's storm
of big polls delays another cluster's poll by one turn, not by the whole storm (audit H3). When
too many wait already, in all or in the cluster's line, the route answers at once (`refused`),
reading the body without parsing it.
"""
from __future__ import annotations

import logging
from typing import Callable, Hashable

from ..fair_slots import FairSlots, Turn

log = logging.getLogger(__name__)


class Ticket:
    """A place in line for a slot (`big`), or nothing to wait for (a small body)."""

    def __init__(self, admission: "BigBodyAdmission | None", turn: Turn | None = None) -> None:
        self._admission = admission
        self._turn = turn

    @property
    def big(self) -> bool:
        return self._turn is not None

    def wait(self) -> None:
        """Block until this ticket holds a slot, or give up the place after the wait limit."""
        turn, admission = self._turn, self._admission
        if turn is None or turn.wait(admission.max_wait_seconds):
            return
        self._turn = None  # out of the line: nothing to give back
        # Slot holders are stuck (a slow database?): better to go ahead than to leave it hanging.
        log.warning("no admission slot for a big body after %.0f s; going ahead", admission.max_wait_seconds)

    def release(self) -> None:
        """Give the slot (or the place in line) back; safe to call more than once."""
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()


_SMALL = Ticket(None)


class BigBodyAdmission:
    """`cluster()` names the line a request waits in (the route's cluster); None: one line."""

    def __init__(self, *, threshold_bytes: int, slots: int, max_waiting: int,
                 max_waiting_per_cluster: int | None = None, max_wait_seconds: float = 30.0,
                 cluster: Callable[[], Hashable] | None = None):
        self.threshold_bytes = threshold_bytes
        self.max_wait_seconds = max_wait_seconds
        self._cluster = cluster
        self._slots = FairSlots(slots, max_waiting=max_waiting, max_waiting_per_key=max_waiting_per_cluster)
        self.capacity = slots + max_waiting  # request threads it can hold at once


    @property
    def free(self) -> int:
        return self._slots.free

    @property
    def waiting(self) -> int:
        return self._slots.waiting

    def enter(self, content_length: int | None) -> Ticket | None:
        """Take a place in line without waiting: a ticket to `wait()` on and `release()`, or None
        when too many wait already (refused)."""
        if not content_length or content_length < self.threshold_bytes:
            return _SMALL
        turn = self._slots.enter(self._cluster() if self._cluster is not None else None)
        return None if turn is None else Ticket(self, turn)
