"""Group commit: concurrent writes of one kind share one statement and one commit.

Under load, every create and every result was its own INSERT or UPDATE and its own commit; the
statement overhead, the commit and the pool borrow cost more than the row. Here request threads
queue their write; one of them (the leader) takes everything queued, runs it as one batch, and
hands the lead to the next waiting thread. A lone request leads at once, so an idle server adds
no latency; batches form by themselves while a write is in flight, and grow with the load.

A batch that fails is retried item by item, so one bad row fails only its own request.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Generic, Hashable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_WAITING, _LEAD, _DONE = 0, 1, 2
_UNSET = object()


class _Item(Generic[T, R]):
    __slots__ = ("value", "result", "error", "state", "event")

    def __init__(self, value: T) -> None:
        self.value = value
        self.result: R | object = _UNSET
        self.error: BaseException | None = None
        self.state = _WAITING
        self.event = threading.Event()


class GroupCommit(Generic[T, R]):
    """`submit(value)` returns what `write_many` returned for that value.

    `write_many(values)` writes a batch and returns one result per value, in order. `key(value)`,
    when given, keeps two values with the same key out of one batch (the later waits for the next).
    `isolate(exc)` says whether a failed batch is worth retrying value by value.
    """

    def __init__(self, write_many: Callable[[list[T]], list[R]], *, max_batch: int = 100,
                 key: Callable[[T], Hashable] | None = None,
                 isolate: Callable[[Exception], bool] = lambda exc: True) -> None:
        self._write_many = write_many
        self._isolate = isolate
        self._max_batch = max_batch
        self._key = key
        self._lock = threading.Lock()
        self._queue: deque[_Item[T, R]] = deque()
        self._busy = False  # a leader is running a batch
        self.batches = 0  # counters, for tests and the bench
        self.items = 0

    def submit(self, value: T) -> R:
        item: _Item[T, R] = _Item(value)
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            self._busy = True
        if not lead:
            item.event.wait()
        if item.state != _DONE:  # we lead: our item is first in the queue
            try:
                self._run(self._take())
            finally:
                self._hand_over()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def _take(self) -> list[_Item[T, R]]:
        with self._lock:
            if self._key is None:
                count = min(len(self._queue), self._max_batch)
                return [self._queue.popleft() for _ in range(count)]
            batch, later, seen = [], [], set()
            while self._queue and len(batch) < self._max_batch:
                item = self._queue.popleft()
                k = self._key(item.value)
                (later if k in seen else batch).append(item)
                seen.add(k)
            self._queue.extendleft(reversed(later))
            return batch

    def _run(self, batch: list[_Item[T, R]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = self._write_many([item.value for item in batch])
            for item, result in zip(batch, results, strict=True):
                item.result = result
        except Exception as exc:
            if len(batch) == 1 or not self._isolate(exc):
                for item in batch:  # e.g. the database is down: one by one would only fail slower
                    item.error = exc
            else:  # find the bad one: the rest must not fail with it
                log.warning("a batch of %d writes failed (%s); retrying them one by one", len(batch), exc)
                for item in batch:
                    try:
                        item.result = self._write_many([item.value])[0]
                    except Exception as one:
                        item.error = one
        finally:
            for item in batch:
                if item.result is _UNSET and item.error is None:
                    item.error = RuntimeError("the batched write returned no result for this item")
                item.state = _DONE
                item.event.set()

    def _hand_over(self) -> None:
        with self._lock:
            if self._queue:
                nxt = self._queue[0]
                nxt.state = _LEAD
                nxt.event.set()
            else:
                self._busy = False
