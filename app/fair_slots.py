"""Slots handed to waiters kept in one line per key, the lines taking turns (round robin).

A key with a thousand waiters delays another key's waiter by one turn, not a thousand. Used for
each cluster's status reads (engine/jobs.py) and big bodies (api/admission.py), and for the
database pool's connections, one line per credential (db.py); so it depends on nothing of the app.
"""
from __future__ import annotations

import collections
import threading
from contextlib import contextmanager
from typing import Hashable, Iterator


class Turn:
    """A place in a `FairSlots` line: `wait()` for the slot, then `release()` it."""

    __slots__ = ("_slots", "_key", "_granted", "_done")

    def __init__(self, slots: "FairSlots", key: Hashable) -> None:
        self._slots, self._key = slots, key
        self._granted = threading.Event()
        self._done = False

    @property
    def granted(self) -> bool:
        return self._granted.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this turn holds a slot; False (and out of the line) after `timeout`."""
        if self._granted.wait(timeout):
            return True
        return self._slots._give_up(self)

    def release(self) -> None:
        """Give the slot (or the place in line) back; safe to call more than once."""
        self._slots._leave(self)


class FairSlots:
    """`slots` holders at a time; waiters queue in one line per key, and the lines take turns.

    A free slot goes to a newcomer only when nobody waits. Within one key, first come first served.
    `max_waiting` (in all) and `max_waiting_per_key` bound the lines: `enter` refuses past them."""

    def __init__(self, slots: int, *, max_waiting: int | None = None, max_waiting_per_key: int | None = None) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._max_waiting = max_waiting
        self._max_per_key = max_waiting_per_key
        self._lines: collections.OrderedDict[Hashable, collections.deque[Turn]] = collections.OrderedDict()
        self._waiting = 0

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return self._waiting

    def enter(self, key: Hashable = None) -> Turn | None:
        """Take a slot if one is free and nobody waits, else a place in `key`'s line, without
        blocking; None when the line (or all lines) are full."""
        turn = Turn(self, key)
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                turn._granted.set()
                return turn
            line = self._lines.get(key)
            if (self._max_waiting is not None and self._waiting >= self._max_waiting) or (
                    self._max_per_key is not None and line is not None and len(line) >= self._max_per_key):
                return None
            if line is None:
                line = self._lines[key] = collections.deque()
            line.append(turn)
            self._waiting += 1
        return turn

    def acquire(self, key: Hashable = None, blocking: bool = True, timeout: float | None = None) -> bool:
        """Like a semaphore's: take a slot (waiting in `key`'s line when `blocking`)."""
        with self._lock:  # the common case, a free slot, needs no Turn
            if self._free and not self._waiting:
                self._free -= 1
                return True
        if not blocking:
            return False
        turn = self.enter(key)
        return turn is not None and turn.wait(timeout)

    def release(self) -> None:
        """Give back a slot taken with `acquire`."""
        with self._lock:
            self._pass_on()

    @contextmanager
    def hold(self, key: Hashable = None) -> Iterator[None]:
        """Hold a slot for the block, after waiting for it in `key`'s line as long as it takes."""
        self.acquire(key)
        try:
            yield
        finally:
            self.release()

    def _pass_on(self) -> None:
        """A slot came free: the next line in turn gets it, and goes to the back of the rotation."""
        if not self._lines:
            self._free += 1
            return
        key, line = next(iter(self._lines.items()))
        turn = line.popleft()
        self._waiting -= 1
        if line:
            self._lines.move_to_end(key)
        else:
            del self._lines[key]
        turn._granted.set()

    def _remove(self, turn: Turn) -> None:
        line = self._lines[turn._key]
        line.remove(turn)
        self._waiting -= 1
        if not line:
            del self._lines[turn._key]

    def _give_up(self, turn: Turn) -> bool:
        with self._lock:
            if turn._granted.is_set():  # granted just as the wait ran out
                return True
            if not turn._done:
                turn._done = True
                self._remove(turn)
        return False

    def _leave(self, turn: Turn) -> None:
        with self._lock:
            if turn._done:
                return
            turn._done = True
            if turn._granted.is_set():
                self._pass_on()
            else:  # left the line before its turn
                self._remove(turn)
