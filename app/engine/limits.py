"""Concurrency limits: the claim never hands out more running jobs than a worker's poll allows.

Workers declare limits in their poll (POST /jobs-request): `concurrency` on a function (running
jobs of that function) and on the service (running jobs of all its functions), across every
machine of the cluster. Each poll is judged by its own limits against the running jobs of all
machines: machines that declare different limits each claim up to their own, and a poll that
declares none (the published SDK's) claims as it always did.

Enforcement is in the database, so it holds across machines and control-plane replicas: a limited
claim is one transaction that first takes the (cluster, service)'s limits lock (a transaction
advisory lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already admits one writer), then counts the
running jobs and claims within the room left. Two limited claims of one service never overlap, so
neither can count before the other's claim commits. Polls without limits keep the one-statement
claim and never take the lock (nor are they held back: a machine that declares no limit can take a
limited function past it).

The claim skips the queued jobs of functions at their limit to reach other functions' jobs. With
no per-function index of pending jobs, that reads through a full function's backlog; a poll whose
every function is full therefore claims nothing without reading the queue (a job of a function it
does not name waits until one of its own has room).

A poll that found a limit full waits for a running job to finish as well as for new jobs: it
watches the job topics of the jobs holding the limit (the result of each job wakes its topic
already), so it claims as soon as one finishes, and unlimited polls pay nothing for it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .. import db
from . import statements
from .signals import Subscription, hub, job_topic

MAX_CONCURRENCY = 1_000_000  # a limit above any claim's reach; larger values are refused as input
_MAX_WATCHED = 1000  # running jobs a full poll watches; past that it re-checks every few seconds
_UNWATCHED_RECHECK_SECONDS = 5.0  # a holder past the watched ones may finish unseen


@dataclass(frozen=True)
class Limits:
    """What one poll declared: the service's limit (or None) and each limited function's."""

    service: int | None = None
    functions: Mapping[str, int] = field(default_factory=dict)
    served: frozenset[str] | None = None  # the functions the poll named (None: it sent no list)

    @classmethod
    def declared(cls, service_limit: int | None, functions: Iterable[Mapping] | None) -> "Limits | None":
        """The limits of a poll's body (`concurrency`, `functions[].concurrency`), None when it has
        none. A function named twice gets the smaller of its limits."""
        by_function: dict[str, int] = {}
        for fn in functions or ():
            limit = fn.get("concurrency")
            if limit is not None:
                by_function[fn["name"]] = min(limit, by_function.get(fn["name"], limit))
        if service_limit is None and not by_function:
            return None
        served = None if functions is None else frozenset(fn["name"] for fn in functions)
        return cls(service_limit, by_function, served)


@dataclass(frozen=True)
class LimitedClaim:
    rows: list[tuple]  # as statements.claim_jobs gives them
    watch: list[str]  # nothing claimed because a limit is full: the running jobs holding it


def lock_key(cluster_id: str, service: str) -> str:
    return f"limits/{cluster_id}/{service}"


# Limited claims of one service queue here, in the process, before they borrow a connection: many
# parked polls woken at once would otherwise each hold a pooled connection while they wait for the
# database lock, and starve every other request of the pool. Striped: bounded, and a collision only
# makes two services' (short) claims take turns.
_STRIPES = [threading.Lock() for _ in range(64)]


def claim(cluster_id: str, service: str, machine_id: str, limit: int, limits: Limits) -> LimitedClaim:
    """Claim up to `limit` jobs, oldest first, within the limits; one transaction."""
    with _STRIPES[hash((cluster_id, service)) % len(_STRIPES)]:
        return db.unit_of_work(lambda: _claim(cluster_id, service, machine_id, limit, limits))


def _claim(cluster_id: str, service: str, machine_id: str, limit: int, limits: Limits) -> LimitedClaim:
    db.dialect.lock_key(lock_key(cluster_id, service))
    running = statements.running_counts(cluster_id, service)
    room = limit
    if limits.service is not None:
        room = min(room, limits.service - sum(running.values()))
    service_full = room <= 0  # (the caller asks for limit > 0)
    caps = {fn: cap - running.get(fn, 0) for fn, cap in limits.functions.items()}
    full = sorted(fn for fn, left in caps.items() if left <= 0)
    if limits.served and limits.served <= set(full):
        room = 0  # every function the poll serves is full: no need to read past their queued jobs
    rows: list[tuple] = []
    # Each round claims the oldest jobs of the functions with room; a round that filled some
    # function's room may have passed over younger jobs of others, so it goes again without it.
    # Every further round excludes one more function: at most len(caps) + 1 rounds.
    while room > 0:
        batch = statements.claim_jobs_limited(cluster_id=cluster_id, service=service, machine_id=machine_id,
                                              limit=room, exclude=full,
                                              caps={fn: left for fn, left in caps.items() if fn not in full})
        rows += batch
        room -= len(batch)
        filled = []
        for _seq, _id, target_fn, *_rest in batch:
            if target_fn in caps:
                caps[target_fn] -= 1
                if caps[target_fn] == 0:
                    filled.append(target_fn)
        if not filled:
            break  # nothing was passed over: the queue has no more for us
        full = sorted(set(full) | set(filled))
    if rows or not (full or service_full):
        return LimitedClaim(rows, [])
    holders = None if service_full else full  # the jobs whose finishing makes room
    return LimitedClaim(rows, statements.running_ids(cluster_id, service, holders, _MAX_WATCHED))


class _Relay(Subscription):
    """Watches topics for another subscription: a wake-up wakes that one's waiter."""

    def __init__(self, target: Subscription, topics: list[str]):
        super().__init__(hub, topics)
        self._target = target

    def wake(self, topic: str | None = None) -> None:
        self._target.wake(topic)


class Holders:
    """The running jobs a poll at a full limit waits on: each one's finishing (its job topic, woken
    by its result, or by maintenance ending it) wakes the poll's own subscription."""

    def __init__(self, cluster_id: str, poll: Subscription):
        self._cluster_id = cluster_id
        self._poll = poll
        self._relay: _Relay | None = None
        self._partial = False

    def longest_wait(self, seconds: float) -> float:
        """How long the poll may wait for a wake-up: not past a re-check when it could not watch
        every holder (a holder it does not watch finishing wakes nobody)."""
        return min(seconds, _UNWATCHED_RECHECK_SECONDS) if self._partial else seconds

    def __enter__(self) -> "Holders":
        return self

    def __exit__(self, *exc) -> None:
        if self._relay is not None:
            self._relay.__exit__(None, None, None)
            self._relay = None

    def follow(self, job_ids: list[str]) -> bool:
        """Watch these jobs instead of the previous ones; True when one had already finished (the
        claim read it running; it may have finished before the watch began)."""
        self._partial = len(job_ids) >= _MAX_WATCHED
        topics = sorted(job_topic(self._cluster_id, job_id) for job_id in job_ids)
        if (self._relay.topics if self._relay else []) == topics:
            return False  # watched since before the claim that read them: nothing can be missed
        # The previous relay stays until the new one listens, so no wake-up falls in between.
        previous, self._relay = self._relay, (_Relay(self._poll, topics).__enter__() if topics else None)
        if previous is not None:
            previous.__exit__(None, None, None)
        return bool(job_ids) and not _all_running(self._cluster_id, job_ids)


def _all_running(cluster_id: str, job_ids: list[str]) -> bool:
    count = db.unit_of_work(lambda: statements.count_still_running(cluster_id, job_ids), transaction=False)
    return count == len(job_ids)
