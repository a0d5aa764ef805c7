"""Wake-ups for long polls: in-process subscriptions fed by PostgreSQL LISTEN/NOTIFY.

A topic names something a poll waits for: `q/<cluster>/<service>` (a job became claimable) or
`j/<cluster>/<job id>` (a job finished), or `d/due` (a job became scheduled), or `c/credentials`
(a secret rotated or a cluster deleted) and `c/services` (a definition or an active deployment
changed): callbacks, `on_topic`, clear caches; this module is the only code that knows the format.
NOTIFY is only a hint: waiters always re-read the table, and wake on a fallback timer too, so a
missed notification costs a delay, never a lost job. One LISTEN connection per process
(opened lazily, after gunicorn forks) feeds every waiter; it reconnects after a database restart
and then wakes everyone to re-check. On SQLite the same interface works by waking waiters of this
process directly and short-polling for the rest.
"""
from __future__ import annotations

import logging
import select
import threading
import time
from typing import Callable, Iterable

from .. import db

log = logging.getLogger(__name__)

CHANNEL = "differential"
_MAX_PAYLOAD = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more

# How long a waiter sleeps at most before it re-reads anyway. While the listener is connected
# PostgreSQL delivers every committed NOTIFY to it, and a reconnect wakes everyone, so the timer
# only backs up a wake-up a writer of this process forgot: as long as the longest long poll
# (api/schemas.py MAX_WAIT_MS), a parked poll wakes for a change or at its ttl, never for nothing
# (at 5 s, 1,000 tenants' parked polls re-read 150 times a second for nothing). Without the
# listener (SQLite, or PostgreSQL while it reconnects) waiters short-poll.
LISTENING_FALLBACK_SECONDS = 20.0
SHORT_POLL_SECONDS = 0.25


def queue_topic(cluster_id: str, service: str) -> str:
    return f"q/{cluster_id}/{service}"


def topic_sql(kind: str, cluster_column: str, name_column: str) -> str:
    """The SQL expression that builds the topic `queue_topic` ("q") or `job_topic` ("j") builds,
    from a row's columns: for NOTIFYs sent from inside a statement."""
    return f"'{kind}/' || {cluster_column} || '/' || {name_column}"


def job_topic(cluster_id: str, job_id: str) -> str:
    return f"j/{cluster_id}/{job_id}"


# A job became scheduled (a delay, a back-off): the maintenance loop wakes to see whether it falls
# due before its next tick. One topic for every cluster: only the lease holder listens.
DUE_TOPIC = "d/due"

# A cluster's credentials changed (a secret rotated, a cluster deleted): every process forgets the
# secrets it cached (engine/clusters.py), through a callback rather than a waiter.
CREDENTIALS_TOPIC = "c/credentials"

# A service's definition changed, or which of its deployments is active: every process forgets the
# per-service facts a create reads (engine/controls.py function defaults, engine/deployments.py
# active_for), through a callback. While the listener is connected those caches hear of every
# change (and a reconnect clears them), so an entry lasts LISTENING_CACHE_SECONDS; without it, the
# cache's own short TTL. A service called less often than that TTL paid a read for each per call.
SERVICES_TOPIC = "c/services"
LISTENING_CACHE_SECONDS = 300.0


def cache_seconds(unlistened: float) -> float:
    """How long an entry of a cache cleared by an `on_topic` callback may be kept, now."""
    return LISTENING_CACHE_SECONDS if hub.listening else unlistened


def job_of(topic: str) -> tuple[str, str] | None:
    """(cluster id, job id) of a job topic; None for any other topic. Cluster ids hold no "/";
    a job id may."""
    if not topic.startswith("j/"):
        return None
    _, cluster_id, job_id = topic.split("/", 2)
    return cluster_id, job_id


def job_ids_of(topics: Iterable[str]) -> set[str]:
    """The job ids of the job topics among these (the callers' topics are of one cluster)."""
    return {job[1] for job in map(job_of, topics) if job is not None}


class Subscription:
    """A waiter's interest in some topics. `wait` reports which of them fired, so a poll over
    thousands of jobs re-reads only the ones that changed."""

    def __init__(self, hub: "Hub", topics: list[str], jobs: tuple[str, frozenset] | None = None):
        self._hub = hub
        self.topics = topics
        self.jobs = jobs  # (cluster id, job ids): woken when any of these jobs finishes
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._fired: set[str] = set()
        self._fired_ever: set[str] = set()
        self._everything = False
        self._everything_ever = False
        self._on_wake: Callable[[], None] | None = None

    def __enter__(self) -> "Subscription":
        self._hub._add(self)
        return self

    def __exit__(self, *exc) -> None:
        self._hub._remove(self)

    def wake(self, topic: str | None = None) -> None:
        """Wake the waiter; topic None means "anything may have changed"."""
        with self._lock:
            if topic is None:
                self._everything = self._everything_ever = True
            else:
                self._fired.add(topic)
                self._fired_ever.add(topic)
        self._event.set()
        on_wake = self._on_wake
        if on_wake is not None:
            on_wake()

    def on_wake(self, callback: Callable[[], None] | None) -> bool:
        """Call `callback` (from whichever thread wakes this) on every wake-up from now on, instead
        of a thread sleeping in `wait`; None stops it. True when a wake-up is pending already."""
        self._on_wake = callback
        return self._event.is_set()

    def wait_seconds(self, timeout: float) -> float:
        """How long `wait(timeout)` sleeps at most (the fallback interval caps it)."""
        return max(0.0, min(timeout, self._hub.fallback_interval))

    def fired_ever(self) -> set[str] | None:
        """Every topic that fired since this subscription began (consumed by wait or not), or None
        when a wake-up for everything came (after a listener reconnect: the set may be incomplete)."""
        with self._lock:
            return None if self._everything_ever else set(self._fired_ever)

    def wait(self, timeout: float) -> set[str] | None:
        """Sleep until woken or timeout (capped by the fallback interval).

        Returns the topics that fired, or None when the caller must re-check everything (a
        fallback timeout, or a wake-up for all after the listener reconnected)."""
        woke = self._event.wait(self.wait_seconds(timeout))
        with self._lock:
            self._event.clear()
            fired, everything = self._fired, self._everything
            self._fired, self._everything = set(), False
        return fired if woke and not everything else None


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        # Batch polls watch thousands of jobs: one entry per cluster, not a set per job topic.
        self._job_watchers: dict[str, set[Subscription]] = {}
        self._dsn: dict | None = None
        self._listener: threading.Thread | None = None
        self._listening = False
        self._stopping = threading.Event()
        self.fallback_interval = SHORT_POLL_SECONDS
        # Topic -> functions called when it fires, and on every wake_all (a listener reconnect).
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    # -- configuration -------------------------------------------------------------------------
    def configure(self, postgres_params: dict | None) -> None:
        """postgres_params: psycopg2.connect keyword arguments, or None on SQLite."""
        self.stop()
        self._dsn = postgres_params
        self.fallback_interval = SHORT_POLL_SECONDS  # until the listener is up

    def _ensure_listener(self) -> None:
        if self._dsn is None or (self._listener and self._listener.is_alive()):
            return
        with self._lock:
            if self._listener and self._listener.is_alive():
                return
            self._stopping.clear()
            self._listener = threading.Thread(target=self._listen_forever, name="differential-listen", daemon=True)
            self._listener.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None

    @property
    def listening(self) -> bool:
        return self._listening

    def ensure_listening(self) -> None:
        """Start this process's listener if it is not running (PostgreSQL; nothing on SQLite)."""
        self._ensure_listener()

    def on_topic(self, topic: str, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `topic` fires in this process, and whenever anything may have
        been missed (wake_all). Kept across configure(); the listener still starts lazily."""
        with self._lock:
            self._callbacks.setdefault(topic, []).append(callback)

    def _run_callbacks(self, topics: Iterable[str] | None) -> None:
        with self._lock:
            if topics is None:
                found = [fn for fns in self._callbacks.values() for fn in fns]
            else:
                found = [fn for topic in set(topics) for fn in self._callbacks.get(topic, ())]
        for fn in found:
            try:
                fn()
            except Exception:  # a callback must never stop the listener
                log.warning("a callback of the notification hub failed", exc_info=True)

    # -- subscriptions -------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str]) -> Subscription:
        self._ensure_listener()
        return Subscription(self, list(topics))

    def subscribe_jobs(self, cluster_id: str, job_ids: frozenset) -> Subscription:
        """Wake on any of these jobs finishing (their job topics), at the cost of one entry."""
        self._ensure_listener()
        return Subscription(self, [], jobs=(cluster_id, job_ids))

    def _add(self, sub: Subscription) -> None:
        with self._lock:
            for topic in sub.topics:
                self._subscribers.setdefault(topic, set()).add(sub)
            if sub.jobs is not None:
                self._job_watchers.setdefault(sub.jobs[0], set()).add(sub)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            for topic in sub.topics:
                self._discard(self._subscribers, topic, sub)
            if sub.jobs is not None:
                self._discard(self._job_watchers, sub.jobs[0], sub)

    @staticmethod
    def _discard(index: dict, key: str, sub: Subscription) -> None:
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    def wake(self, topics: Iterable[str]) -> None:
        """Wake this process's waiters on these topics."""
        topics = list(topics)
        if self._callbacks:  # registered at import: a read without the lock is enough to skip them
            called = [topic for topic in topics if topic in self._callbacks]
            if called:
                self._run_callbacks(called)
        with self._lock:
            targets = []
            for topic in topics:
                targets.extend((sub, topic) for sub in self._subscribers.get(topic, ()))
                job = job_of(topic) if self._job_watchers else None
                if job is not None:
                    targets.extend((sub, topic) for sub in self._job_watchers.get(job[0], ())
                                   if job[1] in sub.jobs[1])
        for sub, topic in targets:
            sub.wake(topic)

    def wake_all(self) -> None:
        self._run_callbacks(None)
        with self._lock:
            targets = set().union(*self._subscribers.values(), *self._job_watchers.values())
        for sub in targets:
            sub.wake()

    # -- PostgreSQL ----------------------------------------------------------------------------
    @staticmethod
    def notify_payloads(topics: Iterable[str]) -> list[str]:
        """Pack topics into as few NOTIFY payloads as fit."""
        payloads, current = [], ""
        for topic in topics:
            if current and len(current) + 1 + len(topic) > _MAX_PAYLOAD:
                payloads.append(current)
                current = ""
            current = f"{current}\n{topic}" if current else topic
        if current:
            payloads.append(current)
        return payloads

    def _listen_forever(self) -> None:
        import psycopg2
        import psycopg2.extensions

        backoff = 0.2
        while not self._stopping.is_set():
            conn = None
            try:
                conn = psycopg2.connect(**self._dsn)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                self._listening = True
                self.fallback_interval = LISTENING_FALLBACK_SECONDS
                backoff = 0.2
                self.wake_all()  # anything may have happened while we were not listening
                last_check = time.monotonic()
                # A poller, not select(): a busy process has thousands of sockets, and select()
                # cannot watch a descriptor numbered above 1023.
                poller = select.poll()
                poller.register(conn.fileno(), select.POLLIN)
                while not self._stopping.is_set():
                    ready = poller.poll(1000)
                    if ready:
                        conn.poll()
                        topics: list[str] = []
                        while conn.notifies:
                            note = conn.notifies.pop(0)
                            if not db.is_own_backend(note.pid):  # our writers woke us already
                                topics.extend(note.payload.split("\n"))
                        if topics:
                            self.wake(topics)
                    elif time.monotonic() - last_check > 10:
                        with conn.cursor() as cur:  # detects a dead server on an idle socket
                            cur.execute("SELECT 1")
                        last_check = time.monotonic()
            except Exception as exc:  # the listener must survive anything; waiters fall back to polling
                if not self._stopping.is_set():
                    log.warning("notification listener lost its connection (%s); reconnecting", exc)
            finally:
                self._listening = False
                self.fallback_interval = SHORT_POLL_SECONDS
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)


hub = Hub()


def notify_in_transaction(topics: Iterable[str]) -> None:
    """Queue NOTIFYs delivered when the current transaction commits (PostgreSQL; else nothing)."""
    db.dialect.notify(CHANNEL, Hub.notify_payloads(topics))
