"""The heartbeat writer: machines' pings and touches, and workers' polls, written in batches by a
thread of their own instead of by the requests that carry them.

Each heartbeat was a durable autocommit on its request's thread: with a thousand tenants each
calling every few seconds, a tenant's first call waited behind a queue of them (bench/README.md,
"Many tenants"). A request now only notes one (machines.py decides which are worth writing);
every `interval` (a quarter second, less under a short machine timeout) and at shutdown the
pending are written: one upsert of the machines that polled, one upsert of the workers, one
update of the machines that spoke, each a statement per 500 keys, the latest note per key
winning. Times are the database's clock when the batch is written, at most `interval` after the
request.

Rows go in key order, so two processes' upserts lock shared rows in the same order. A batch
that fails (on PostgreSQL, a deadlock of two processes' touches is one way) is handed to
`on_lost`, so its keys are noted again by their next request rather than skipped by the
throttles; a failure is logged, never raised. Readers that must see this process's latest rows
flush first.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .. import db
from ..flush_thread import FlushThread
from .states import MachineStatus

log = logging.getLogger(__name__)

_FAILURE_LOG_SECONDS = 60.0
_CHUNK = 500  # rows a statement: 4 parameters each, well under SQLite's 32,766
_ACTIVE = f"'{MachineStatus.ACTIVE}'"

# One multi-row statement per kind, the same on both databases (SQLite 3.35+: RETURNING, UPDATE
# FROM). A batch never names a key twice: PostgreSQL refuses an upsert that touches a row twice.
_PINGS = ("INSERT INTO machines (cluster_id, id, ip, deployment_id, status, first_seen_at, last_ping_at) VALUES {rows}"
          " ON CONFLICT (cluster_id, id) DO UPDATE SET last_ping_at = excluded.last_ping_at,"
          " status = excluded.status, ip = excluded.ip")
_PING_ROW = f"(%s, %s, %s, %s, {_ACTIVE}, {{now}}, {{now}})"  # {now}: the dialect's clock
# A touch refreshes a machine that exists and never makes one; RETURNING says which existed.
_TOUCHES = ("WITH v(cluster_id, id, ip) AS (VALUES {rows})"
            f" UPDATE machines SET last_ping_at = {{now}}, status = {_ACTIVE}, ip = v.ip FROM v"
            " WHERE machines.cluster_id = v.cluster_id AND machines.id = v.id"
            " RETURNING machines.cluster_id, machines.id")
_TOUCH_ROW = "(%s, %s, %s)"
_POLLS = ("INSERT INTO workers (cluster_id, service, machine_id, first_poll_at, last_poll_at) VALUES {rows}"
          " ON CONFLICT (cluster_id, service, machine_id) DO UPDATE SET last_poll_at = excluded.last_poll_at")
_POLL_ROW = "(%s, %s, %s, {now}, {now})"

PING, TOUCH, POLL = "ping", "touch", "poll"


class HeartbeatWriter:
    def __init__(self, *, on_lost: Callable[[str, list[tuple]], None],
                 on_unknown: Callable[[list[tuple]], None], interval: float = 0.25,
                 max_keys: int = 50_000) -> None:
        self._on_lost, self._on_unknown = on_lost, on_unknown
        self.interval, self._max = interval, max_keys
        self._pending: dict[str, dict[tuple, tuple]] = {PING: {}, TOUCH: {}, POLL: {}}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._failures, self._failure_logged_at = 0, None
        self._thread = FlushThread("differential-heartbeats", self.flush, lambda: self.interval)

    def configure(self, *, machine_timeout_seconds: float) -> None:
        """A write lands well within the machine timeout after the one before it (machines.py
        writes a live machine every quarter timeout): at most an eighth of it, and 0.25 s."""
        self.interval = min(0.25, machine_timeout_seconds / 8)

    def note(self, kind: str, key: tuple, values: tuple = ()) -> bool:
        """Note a heartbeat for the next batch; False when too many are pending (not noted)."""
        with self._lock:
            pending = self._pending[kind]
            if key not in pending and len(pending) >= self._max:
                return False
            pending[key] = values
        self._thread.ensure()
        return True

    def pending(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._pending.values())

    def flush(self) -> bool:
        """Write everything noted so far (a no-op when nothing is); False when the write failed.
        A failure is logged, never raised: a heartbeat must not fail the request that reads after
        it, and its keys are handed to `on_lost` to be noted again by their next request."""
        with self._flush_lock:
            with self._lock:
                if not any(self._pending.values()):
                    return True
                batch, self._pending = self._pending, {PING: {}, TOUCH: {}, POLL: {}}
            try:
                known = _write(batch)
            except BaseException as exc:
                for kind, notes in batch.items():
                    if notes:
                        self._on_lost(kind, list(notes))
                if not isinstance(exc, Exception):
                    raise
                self._failed(sum(len(notes) for notes in batch.values()))
                return False
            unknown = [key for key in batch[TOUCH] if key not in known]
            if unknown:
                self._on_unknown(unknown)
            return True

    def _failed(self, count: int) -> None:
        """Log a failed write, at most once a minute (a database that is down fails every batch)."""
        self._failures += 1
        now = time.monotonic()
        if self._failure_logged_at is None or now - self._failure_logged_at >= _FAILURE_LOG_SECONDS:
            log.exception("writing %d machine heartbeats failed (%d failed batches since the last such line); "
                          "each is noted again by its next request", count, self._failures)
            self._failure_logged_at, self._failures = now, 0

    def close(self) -> None:
        self._thread.stop()
        if db.database.obj is not None:
            self.flush()


def _write(batch: dict[str, dict[tuple, tuple]]) -> set[tuple]:
    """Write one batch; returns the touched keys that exist. Each statement commits by itself: a
    transaction around all three would hold one process's ping locks while it waited for another's
    touch locks, and the other way round (a deadlock)."""
    _each_chunk(_PINGS, _PING_ROW, [(*key, *values) for key, values in sorted(batch[PING].items())])
    _each_chunk(_POLLS, _POLL_ROW, sorted(batch[POLL]))
    touched = _each_chunk(_TOUCHES, _TOUCH_ROW, [(*key, *values) for key, values in sorted(batch[TOUCH].items())])
    return {tuple(row) for row in touched}


def _each_chunk(statement: str, row: str, rows: list[tuple]) -> list[tuple]:
    """Run `statement` over `rows`, a chunk at a time, each an upsert or update that may run twice;
    returns what the statements returned."""
    returned: list[tuple] = []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        sql = statement.replace("{rows}", ", ".join([row] * len(chunk))).replace("{now}", db.dialect.now)
        params = [v for r in chunk for v in r]
        returned.extend(db.unit_of_work(lambda sql=sql, params=params: _run(sql, params), transaction=False,
                                        idempotent=True))
    return returned


def _run(sql: str, params: list) -> list[tuple]:
    cursor = db.execute(sql, params)
    return cursor.fetchall() if cursor.description is not None else []
