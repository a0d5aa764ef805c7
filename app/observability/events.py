"""The activity log writer: events are buffered in memory and written in batches.

Writing an event row inside every request would double the writes of the hot path, so events are
appended to a bounded buffer and flushed every half second (and at shutdown) in chunks. Losing an
activity record must never fail or slow a job, and one tenant must never lose another's:
- every field is cut to its column's size, so no value can fail a chunk on PostgreSQL;
- a chunk that fails for its data is written again row by row, so a bad row loses only itself
  (a chunk that fails for the connection is dropped: one by one would only fail slower);
- each cluster holds at most its share of the buffer, so one cluster's flood of `/metrics`
  drops its own events, not the others'. Drops are logged, at most once per cluster a minute.
Payloads (arguments, results) are never copied into events.
"""
from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from typing import Callable

from .. import db
from ..flush_thread import FlushThread
from ..models import Event, utcnow
from . import prometheus

_created_at = Event.created_at.db_value

log = logging.getLogger(__name__)

_CHUNK = 500
_DROP_LOG_SECONDS = 60.0
_COLUMNS = ("cluster_id", "type", "job_id", "machine_id", "service", "deployment_id", "created_at", "meta")
_SIZES = {name: Event._meta.fields[name].max_length for name in _COLUMNS
          if getattr(Event._meta.fields[name], "max_length", None)}


class EventLog:
    def __init__(self, interval: float = 0.5, *, max_rows: int = 100_000, cluster_rows: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._buffer: list[dict] = []
        self._held: dict[str, int] = {}  # rows of each cluster in the buffer
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._thread = FlushThread("differential-events", lambda: self._buffer and self.flush(), lambda: self._interval)
        self._clock = clock
        self._drops: dict[str, list] = {}  # cluster -> [dropped since its last log line, time of that line]
        self.configure(max_rows=max_rows, cluster_rows=cluster_rows)
        self.dropped = 0

    def configure(self, *, max_rows: int, cluster_rows: int) -> None:
        """The buffer's size, and the most of it one cluster may hold (EVENT_BUFFER_* settings)."""
        self._max_rows, self._cluster_rows = max_rows, min(cluster_rows, max_rows)

    def record(self, cluster_id: str, type: str, *, job_id: str | None = None, machine_id: str | None = None,
               service: str | None = None, deployment_id: str | None = None, meta: dict | None = None,
               **fields) -> bool:
        """Buffer one event; `meta` carries arbitrary (client-sent) keys, `fields` our own.
        False when it was dropped (its cluster's share, or the whole buffer, is full)."""
        prometheus.count_event(cluster_id, type, service, fields)  # every transition, even one whose row drops
        if not self._has_room(cluster_id):  # a flood is dropped before it costs a row
            return self._dropped(cluster_id)
        meta = {**(meta or {}), **fields}
        row = {
            "cluster_id": cluster_id, "type": type, "job_id": job_id, "machine_id": machine_id,
            "service": service, "deployment_id": deployment_id, "created_at": _created_at(utcnow()),
            "meta": json.dumps(meta, default=str) if meta else None,
        }
        for name, size in _SIZES.items():
            value = row[name]
            if isinstance(value, str) and len(value) > size:
                row[name] = value[:size]
        with self._lock:
            if not self._has_room(cluster_id):
                accepted = False
            else:
                self._buffer.append(row)
                self._held[cluster_id] = self._held.get(cluster_id, 0) + 1
                accepted = True
        if not accepted:
            return self._dropped(cluster_id)
        self._thread.ensure()
        return True

    def _has_room(self, cluster_id: str) -> bool:
        return len(self._buffer) < self._max_rows and self._held.get(cluster_id, 0) < self._cluster_rows

    def _dropped(self, cluster_id: str) -> bool:
        with self._lock:
            self.dropped += 1
            entry = self._drops.setdefault(cluster_id, [0, None])
            entry[0] += 1
            due = entry[1] is None or self._clock() - entry[1] >= _DROP_LOG_SECONDS
        if due:
            self._log_drops(cluster_id)
        return False

    def _log_drops(self, cluster_id: str) -> None:
        with self._lock:
            entry = self._drops[cluster_id]
            count, entry[0], entry[1] = entry[0], 0, self._clock()
        if count:
            log.warning("dropping activity events of cluster %s (%d since the last such line): its share of the "
                        "event buffer (EVENT_BUFFER_CLUSTER_ROWS=%d) or the buffer (EVENT_BUFFER_ROWS=%d) is full",
                        cluster_id, count, self._cluster_rows, self._max_rows)

    def flush(self) -> int:
        """Write everything buffered so far; returns the number of rows written."""
        with self._flush_lock:
            with self._lock:
                rows, self._buffer, self._held = self._buffer, [], {}
                quiet = [c for c, (count, at) in self._drops.items()
                         if count and at is not None and self._clock() - at >= _DROP_LOG_SECONDS]
            for cluster_id in quiet:  # drops since the last line, once the flood is over
                self._log_drops(cluster_id)
            written = 0
            for start in range(0, len(rows), _CHUNK):
                written += self._write(rows[start:start + _CHUNK])
            return written

    def _write(self, chunk: list[dict]) -> int:
        try:
            db.unit_of_work(lambda: _insert(chunk), retries=1, transaction=False)
            return len(chunk)
        except Exception as exc:
            if len(chunk) == 1 or not db.is_data_error(exc):
                self.dropped += len(chunk)
                log.exception("dropped %d activity events", len(chunk))
                return 0
            first_error = exc
        written, lost = 0, set()
        for row in chunk:  # one bad row must not take the others with it
            try:
                db.unit_of_work(lambda row=row: _insert([row]), retries=1, transaction=False)
                written += 1
            except Exception:
                self.dropped += 1
                lost.add(str(row["cluster_id"]))
        log.warning("a chunk of %d activity events failed (%s); written one by one: %d, dropped %d (of clusters %s)",
                    len(chunk), first_error, written, len(chunk) - written, ", ".join(sorted(lost)) or "none")
        return written

    def close(self) -> None:
        self._thread.stop()
        if self._buffer and db.database.obj is not None:
            self.flush()


_ROW = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"


def _insert(rows: list[dict]) -> None:
    """One multi-row INSERT as plain SQL: the query builder cost more CPU than the database did."""
    params = []
    for row in rows:
        params.extend(row[c] for c in _COLUMNS)
    db.execute(f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES {', '.join([_ROW] * len(rows))}", params)


events = EventLog()
atexit.register(events.close)
