"""A pool of threads that serves ready requests round-robin over queues, one queue a credential.

A single FIFO (gunicorn's executor) lets one tenant with thousands of quick requests queued push
everybody else's back by all of them. Here each queue key (a credential's hash; requests without
one share a queue) waits its turn: a request waits for at most one request of every other queue
that is ahead of it, however many each holds. The worker's event loop pauses the pool while it
deals with a pile of ready sockets (`pause`), so its threads do not keep the GIL from it.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from contextvars import ContextVar
from typing import Any, Callable, Hashable


log = logging.getLogger(__name__)

PAUSE_MAX_SECONDS = 0.02  # a paused pool's threads start their next request after this anyway


class FairPool:
    """Up to `threads` threads, started as work arrives; `submit` (with a queue key first) and
    `shutdown`. No Future per request: a request's end is told to the callback it was given (a
    Future's condition, lock and callbacks were 3 % of the 10,000 burst's GIL samples)."""

    def __init__(self, threads: int, name: str = "request", key_var: ContextVar | None = None):
        """`key_var`: set to the queue key while a request runs (db.turn_key: its turn for a connection)."""
        self._max = threads
        self._key_var = key_var
        self._name = name
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queues: dict[Hashable, deque] = {}
        self._turns: deque = deque()  # the keys that have work, in the order they are served
        self._queued = 0
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._paused = False
        self._resumed = threading.Condition(self._lock)

    def submit(self, key: Hashable, fn: Callable, *args: Any, then: Callable[[Any, BaseException | None], None] | None = None) -> None:
        """Queue `fn(*args)` on `key`'s queue; `then(result, None)` or `then(None, error)` runs in
        the thread after it."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the pool is shut down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
                self._turns.append(key)
            queue.append((fn, args, then))
            self._queued += 1
            if self._queued > self._idle and len(self._threads) < self._max:
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._work.notify()

    def pause(self) -> None:
        """Start no new request until `resume` (or for `PAUSE_MAX_SECONDS` at most): the requests
        running finish, and then leave the GIL to the thread that paused the pool."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._resumed.notify_all()

    def queued(self) -> int:
        with self._lock:
            return self._queued

    def shutdown(self, wait: bool = True, **_ignored: Any) -> None:
        """Threads finish what they run and what is queued, then end."""
        with self._lock:
            self._stopped = True
            self._work.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

    def _next(self):
        """The head of the queue whose turn it is (with the lock held)."""
        key = self._turns.popleft()
        queue = self._queues[key]
        fn, args, then = queue.popleft()
        if queue:
            self._turns.append(key)
        else:
            del self._queues[key]
        self._queued -= 1
        return key, fn, args, then

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._turns:
                    if self._stopped:
                        return
                    self._idle += 1
                    try:
                        self._work.wait()
                    finally:
                        self._idle -= 1
                if self._paused:
                    self._resumed.wait(PAUSE_MAX_SECONDS)
                    if not self._turns:
                        continue
                key, fn, args, then = self._next()
            if self._key_var is not None:
                self._key_var.set(key)
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # `then` carries it to whoever waits for it
                result, error = None, exc
            if then is not None:
                try:
                    then(result, error)
                except Exception:  # the thread must outlive it: the pool counts its threads
                    log.exception("a request's end could not be handed on")
            del fn, args, then, result, error  # a finished request's connection must not stay referenced here
