"""Batch status polls: wait for any of many jobs to finish, and let a newer poll supersede an older one.

The published SDK keeps one batch poll per outstanding call, each carrying every outstanding id:
thousands of overlapping polls per machine. `_ParkedPolls` lets the newest one take over from the
ones it covers, so one machine parks one poll and each new poll reads only its new ids. The wait
itself is a loop of named steps: the first read, a read on each wake-up (only the ids whose topics
fired), and the answer (with a short linger on a big batch, so results finishing together share
one answer). Reading statuses is the caller's (`jobs.statuses`), passed in.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from . import steps
from .signals import Subscription, hub, job_ids_of
from .states import TERMINAL

# A batch poll over many calls lingers this long after the first result, so one answer carries
# the results that finish together instead of one request per result.
_BATCH_LINGER_SECONDS = 0.02
_BATCH_LINGER_MIN_IDS = 50

# statuses(cluster_id, ids, cancelled=None, result_bytes=None, at_least_one=True) -> rows, or None
# when `cancelled` was set first (jobs.statuses: rows past `result_bytes` of results are left out)
ReadStatuses = Callable[..., "list[dict] | None"]


class _Parked:
    """A batch poll waiting in this process."""

    def __init__(self, ids: frozenset, sub) -> None:
        self.ids, self.sub = ids, sub
        self.superseded = threading.Event()
        self.unfinished: frozenset | None = None  # ids seen unfinished by a read made after sub began
        self.inherited: frozenset = frozenset()  # ids a superseded poll vouched for
        self.big = False  # counted in its cluster's big polls


class _ParkedPolls:
    """Batch polls waiting per (cluster, machine) in this process.

    The published SDK opens a new batch poll for every call made while one is open, each carrying
    every outstanding id (minus the ones it has seen finish). A newer poll that asks for everything
    a parked poll still waits for (all its ids, or all but ones that finished since it parked) makes
    the parked one answer `[]` at once and takes over what it knew: the ids it had read as
    unfinished, minus those that finished since. A poll that asks for fewer ids than a parked one
    (a stale poll that got its turn late) answers `[]` at once. So one machine parks one poll,
    each new poll reads only its new ids from the database, and the check costs one set operation
    per parked poll (superseded polls leave the list at once). Our own SDK's concurrent polls carry
    disjoint ids, so they never supersede each other. Polls without a machine (key `(cluster,
    None)`) take no part in supersession.

    Big polls (big bodies: their ids take memory while parked) are counted per cluster; one past
    the cluster's `big_budget` is refused before it reads anything (audit M5)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._polls: dict[tuple[str, str], list[_Parked]] = {}
        self._big: dict[str, int] = {}

    def park(self, key: tuple[str, str | None], ids: frozenset, sub, *,
             big_budget: int | None = None) -> _Parked | None:
        """Call with `sub` already subscribed, so nothing finishing from now on can be missed.
        None: refused, the cluster already has `big_budget` big polls parked."""
        poll = _Parked(ids, sub)
        cluster_id, machine_id = key
        with self._lock:
            parked = self._polls.get(key, ()) if machine_id else ()
            if any(ids < old.ids for old in parked):
                # A poll that arrives (or got its turn) after a wider one from the same machine:
                # that one already waits for all of these ids, so this one answers `[]` at once.
                poll.superseded.set()
                return poll
            kept, covered = [], []
            for old in parked:
                fired = old.sub.fired_ever()
                finished = None if fired is None else job_ids_of(fired)
                if not _asks_for_all_of(ids, old, finished):
                    kept.append(old)
                    continue
                covered.append(old)
                if old.unfinished is not None and finished is not None and not poll.inherited:
                    poll.inherited = old.unfinished - finished
            if big_budget is not None:
                # The polls this one supersedes give their places to it.
                if self._big.get(cluster_id, 0) - sum(old.big for old in covered) >= big_budget:
                    return None
                poll.big = True
                self._big[cluster_id] = self._big.get(cluster_id, 0) + 1
            for old in covered:
                self._uncount(cluster_id, old)
                old.superseded.set()
                old.sub.wake()
            if machine_id:
                kept.append(poll)
                self._polls[key] = kept
        return poll

    def leave(self, key: tuple[str, str | None], poll: _Parked) -> None:
        with self._lock:
            self._uncount(key[0], poll)
            if not key[1]:
                return
            polls = [p for p in self._polls.get(key, []) if p is not poll]
            if polls:
                self._polls[key] = polls
            else:
                self._polls.pop(key, None)

    def big_polls(self, cluster_id: str) -> int:
        with self._lock:
            return self._big.get(cluster_id, 0)

    def _uncount(self, cluster_id: str, poll: _Parked) -> None:
        if poll.big:
            poll.big = False
            left = self._big[cluster_id] - 1
            if left:
                self._big[cluster_id] = left
            else:
                del self._big[cluster_id]


def _asks_for_all_of(ids: frozenset, old: _Parked, finished: set[str] | None) -> bool:
    """Whether a poll for `ids` covers what `old` still waits for."""
    if old.ids <= ids:
        return True
    # The rest of old's ids must have finished since old read them all as unfinished.
    return old.unfinished is not None and finished is not None and old.ids - ids <= finished


@dataclass
class _Read:
    """The ids one read of the loop looks at."""

    ids: list[str]
    all_ids: bool  # every id of the poll: what it finds unfinished is all the poll waits for


def _first_read(job_ids: list[str], poll: _Parked) -> _Read:
    """Every id, except those a superseded poll vouched for as unfinished."""
    if poll.inherited:
        return _Read([i for i in job_ids if i not in poll.inherited], all_ids=False)
    return _Read(job_ids, all_ids=True)


def _on_wake(job_ids: list[str], poll: _Parked, fired: set[str] | None) -> _Read:
    """Finished is final, so only the jobs whose topics fired can have become finished."""
    if fired is None:  # a fallback timeout or a wake-up for everything: read them all again
        poll.inherited = frozenset()
        return _Read(job_ids, all_ids=True)
    return _Read(list(job_ids_of(fired)), all_ids=False)


def _remember_unfinished(poll: _Parked, read: _Read, rows: list[dict]) -> None:
    """What a newer poll may inherit: set by the first read, refreshed by every read of all ids."""
    if read.all_ids or poll.unfinished is None:
        poll.unfinished = poll.inherited | {r["id"] for r in rows}


class BatchPolls:
    def __init__(self, read: ReadStatuses) -> None:
        self._read = read
        self._parked = _ParkedPolls()

    def poll_steps(self, cluster_id: str, job_ids: list[str], ttl_seconds: float, stopping=None,
                   machine_id: str | None = None,
                   after_reading: Callable[[], None] | None = None,
                   result_bytes: int | None = None, big_budget: int | None = None) -> steps.Steps[list[dict]]:
        """Long poll a batch (engine/steps.py): the finished ones as soon as any is, else every
        status after ttl (or at once when the server is shutting down). `after_reading` is called
        once the poll's database reading is done: before its first wait, or before the linger of an
        answer.
        `result_bytes`: the most result bytes one answer carries (the rest are asked for again).
        `big_budget`: this poll is big, and answers `[]` at once (the SDKs ask again) when its
        cluster has that many big polls parked already."""
        if not job_ids:
            return []
        deadline = time.monotonic() + ttl_seconds
        # Only polls that name their machine take part in supersession: callers without an
        # x-machine-id (curl, dashboards) would otherwise release each other's polls in a loop.
        key = (cluster_id, machine_id or None)
        ids = frozenset(job_ids)
        with hub.subscribe_jobs(cluster_id, ids) as sub:
            poll = self._parked.park(key, ids, sub, big_budget=big_budget)
            if poll is None:
                return []
            try:
                read = _first_read(job_ids, poll)
                while True:
                    if poll.superseded.is_set():
                        return []
                    rows = (self._read(cluster_id, read.ids, cancelled=poll.superseded, result_bytes=result_bytes)
                            if read.ids else [])
                    if rows is None:  # superseded while it queued for a read
                        return []
                    finished = [r for r in rows if r["state"] in TERMINAL]
                    remaining = deadline - time.monotonic()
                    if finished:
                        if after_reading is not None:
                            after_reading()  # what is left is a short linger: no CPU, nothing more parsed
                        return (yield from self._answer(cluster_id, job_ids, sub, finished, remaining, result_bytes))
                    _remember_unfinished(poll, read, rows)
                    if remaining <= 0 or (stopping is not None and stopping.is_set()):
                        # A read of every id just now is the answer (a poll past its budget has
                        # ttl 0); none of them is finished, so no result bytes to cap.
                        return rows if read.all_ids else self._read(cluster_id, job_ids, result_bytes=result_bytes)
                    if after_reading is not None:
                        after_reading()
                        after_reading = None
                    read = _on_wake(job_ids, poll, (yield steps.Wait(sub, remaining)))
            finally:
                self._parked.leave(key, poll)

    def _answer(self, cluster_id: str, job_ids: list[str], sub: Subscription, finished: list[dict],
                remaining: float, result_bytes: int | None) -> steps.Steps[list[dict]]:
        """The finished ones; on a big batch, after a moment's wait for results finishing together
        (as many as the answer's result bytes leave room for)."""
        if len(job_ids) < _BATCH_LINGER_MIN_IDS or remaining <= 0:
            return finished
        left = None if result_bytes is None else result_bytes - sum(len(r["result"] or "") for r in finished)
        if left is not None and left <= 0:
            return finished
        yield steps.Wait(None, min(_BATCH_LINGER_SECONDS, remaining))
        more = list(job_ids_of(sub.wait(0) or set()) - {r["id"] for r in finished})
        if not more:
            return finished
        rows = self._read(cluster_id, more, result_bytes=left, at_least_one=False)
        return finished + [r for r in rows if r["state"] in TERMINAL]
