"""Fair sharing of one process's request threads and slots between clusters (tenants).

One cluster, or anyone holding a leaked secret of it, must not take every request thread or every
read slot from the other clusters and from the health check (audit H3). Both tools here are per
process, keyed by cluster, and cost a lock and a few dict operations per use:

* `PollBudget` counts the long polls waiting now, per cluster, per (cluster, machine) and in all.
  A poll within budget waits its whole ttl. Past it, it waits a short pause at most, from a small
  pool per cluster: the published SDK's results poller re-sends an answered poll 100 ms later and
  our SDK at once, so a poll answered with nothing at once would come back at once, in a loop.
  Past that pool too, it answers at once with what it has (ttl 0).
* `FairSlots` (app/fair_slots.py) hands a few slots to waiters kept in one line
  per cluster, served in turn (round robin), so a cluster with a thousand waiters delays another
  cluster's waiter by one turn, not a thousand.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..observability.prometheus import LONG_POLLS_PARKED

log = logging.getLogger(__name__)

_WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class PollLimits:
    per_cluster: int  # polls waiting their ttl, per cluster
    per_machine: int  # and per (cluster, machine)
    total: int  # all polls of this process, pauses included: the rest of the threads serve short requests
    pause_seconds: float  # the longest wait of a poll past its budget
    pauses_per_cluster: int  # polls of one cluster in such a pause at once

    @classmethod
    def for_threads(cls, threads: int, *, per_cluster: int, per_machine: int, reserve: int,
                    pause_seconds: float) -> "PollLimits":
        """`reserve` threads stay free for short requests (`/live`, creates, results). A server
        with few threads still gives half of them to polls (with none, every poll would loop)."""
        return cls(per_cluster=per_cluster, per_machine=per_machine,
                   total=max(threads - reserve, threads // 2, 1), pause_seconds=pause_seconds,
                   pauses_per_cluster=max(1, per_cluster // 4))

    @classmethod
    def parked(cls, capacity: int, *, per_cluster: int, per_machine: int, pause_seconds: float) -> "PollLimits":
        """A server that holds waiting polls without threads: `capacity` of them (its connections)."""
        return cls(per_cluster=per_cluster, per_machine=per_machine, total=max(capacity, 1),
                   pause_seconds=pause_seconds, pauses_per_cluster=max(1, per_cluster // 4))


class PollBudget:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._clusters: dict[str, int] = {}  # polls waiting their ttl
        self._machines: dict[tuple[str, str], int] = {}
        self._pausing: dict[str, int] = {}  # polls past their budget, in a pause
        self._warned: dict[str | None, float] = {}  # cluster (None: the process) -> when last logged

    def admit(self, cluster_id: str, machine_id: str | None, wait_seconds: float,
              limits: PollLimits) -> "_Place":
        """A place for one long poll, to use as `with budget.admit(...) as wait:`. `wait` is how
        long the poll may wait: `wait_seconds` within budget, at most the pause past it, 0 when
        even the pauses are taken."""
        return _Place(self, cluster_id, (cluster_id, machine_id) if machine_id else None, wait_seconds, limits)

    def _take(self, place: "_Place") -> float:
        cluster_id, machine, limits = place.cluster_id, place.machine, place.limits
        with self._lock:
            process_full = self._total >= limits.total
            if process_full:
                kind = None
            elif self._clusters.get(cluster_id, 0) < limits.per_cluster and (
                    machine is None or self._machines.get(machine, 0) < limits.per_machine):
                kind = _POLL
                _add(self._clusters, cluster_id, 1)
                if machine is not None:
                    _add(self._machines, machine, 1)
            elif self._pausing.get(cluster_id, 0) < limits.pauses_per_cluster:
                kind = _PAUSE
                _add(self._pausing, cluster_id, 1)
            else:
                kind = None
            if kind is not None:
                self._total += 1
        place.kind = kind
        if kind is not None:
            LONG_POLLS_PARKED.inc()
        if kind is _POLL:
            return place.wait_seconds
        self._warn(cluster_id, limits, process_full)
        return min(place.wait_seconds, limits.pause_seconds) if kind is _PAUSE else 0.0

    def _give_back(self, place: "_Place") -> None:
        kind, place.kind = place.kind, None
        if kind is None:
            return
        LONG_POLLS_PARKED.dec()
        with self._lock:
            self._total -= 1
            if kind is _POLL:
                _add(self._clusters, place.cluster_id, -1)
                if place.machine is not None:
                    _add(self._machines, place.machine, -1)
            else:
                _add(self._pausing, place.cluster_id, -1)

    def _warn(self, cluster_id: str, limits: PollLimits, process_full: bool) -> None:
        """Say so in the log, at most once a minute per cluster, or per process when the process is
        full (it can happen thousands of times a second)."""
        now = time.monotonic()
        key = None if process_full else cluster_id
        with self._lock:
            if now - self._warned.get(key, -_WARN_EVERY_SECONDS) < _WARN_EVERY_SECONDS:
                return
            if len(self._warned) >= 10_000:
                self._warned.clear()
            self._warned[key] = now
            waiting = self._clusters.get(cluster_id, 0)
        if process_full:  # not this cluster's doing: every tenant's polls fill the process
            log.warning("this process's %d long-poll places are all taken (cluster %s has %d of them): further "
                        "polls answer without waiting their ttl; raise WEB_CONCURRENCY (or, where polls wait in "
                        "threads, GUNICORN_THREADS: they may take it minus LONG_POLL_THREAD_RESERVE and 65)",
                        limits.total, cluster_id, waiting)
            return
        log.warning("cluster %s is past its long-poll budget (%d waiting in this process, %d allowed per "
                    "cluster, %d per machine, %d in all): its further polls answer without waiting their ttl",
                    cluster_id, waiting, limits.per_cluster, limits.per_machine, limits.total)

    def counts(self) -> dict:
        """What waits now (for tests and diagnostics)."""
        with self._lock:
            return {"total": self._total, "clusters": dict(self._clusters), "machines": dict(self._machines),
                    "pausing": dict(self._pausing)}


_POLL, _PAUSE = "poll", "pause"


class _Place:
    __slots__ = ("budget", "cluster_id", "machine", "wait_seconds", "limits", "kind")

    def __init__(self, budget: PollBudget, cluster_id: str, machine: tuple[str, str] | None,
                 wait_seconds: float, limits: PollLimits) -> None:
        self.budget, self.cluster_id, self.machine = budget, cluster_id, machine
        self.wait_seconds, self.limits, self.kind = wait_seconds, limits, None

    def __enter__(self) -> float:
        return self.budget._take(self)

    def __exit__(self, *exc) -> None:
        self.budget._give_back(self)


def _add(counts: dict, key, n: int) -> None:
    left = counts.get(key, 0) + n
    if left > 0:
        counts[key] = left
    else:
        del counts[key]  # idle clusters and machines leave no entry behind
