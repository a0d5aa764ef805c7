"""The activity log writer: events are buffered in memory and written in batches.

Writing an event row inside every request would double the writes of the hot path, so events are
appended to a bounded buffer and flushed every half second (and at shutdown) in chunks. A failed
chunk is retried once and then dropped with a log line: losing an activity record must never
fail or slow a job. Payloads (arguments, results) are never copied into events.
"""
from __future__ import annotations

import atexit
import json
import logging
import threading

from .. import db
from ..models import Event, utcnow

_created_at = Event.created_at.db_value

log = logging.getLogger(__name__)

_CHUNK = 500
_MAX_BUFFER = 100_000


class EventLog:
    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._buffer: list[dict] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.dropped = 0

    def record(self, cluster_id: str, type: str, *, job_id: str | None = None, machine_id: str | None = None,
               service: str | None = None, deployment_id: str | None = None, meta: dict | None = None,
               **fields) -> None:
        """Buffer one event; `meta` carries arbitrary (client-sent) keys, `fields` our own."""
        meta = {**(meta or {}), **fields}
        row = {
            "cluster_id": cluster_id, "type": type, "job_id": job_id, "machine_id": machine_id,
            "service": service, "deployment_id": deployment_id, "created_at": _created_at(utcnow()),
            "meta": json.dumps(meta, default=str) if meta else None,
        }
        with self._lock:
            if len(self._buffer) >= _MAX_BUFFER:
                self.dropped += 1
                return
            self._buffer.append(row)
        self._ensure_thread()

    def flush(self) -> int:
        """Write everything buffered so far; returns the number of rows written."""
        with self._flush_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
            written = 0
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start:start + _CHUNK]
                try:
                    db.unit_of_work(lambda chunk=chunk: _insert(chunk), retries=1, transaction=False)
                    written += len(chunk)
                except Exception:
                    self.dropped += len(chunk)
                    log.exception("dropped %d activity events", len(chunk))
            return written

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="differential-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._buffer:
                self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._buffer and db.database.obj is not None:
            self.flush()


_COLUMNS = ("cluster_id", "type", "job_id", "machine_id", "service", "deployment_id", "created_at", "meta")
_ROW = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"


def _insert(rows: list[dict]) -> None:
    """One multi-row INSERT as plain SQL: the query builder cost more CPU than the database did."""
    params = []
    for row in rows:
        params.extend(row[c] for c in _COLUMNS)
    db.execute(f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES {', '.join([_ROW] * len(rows))}", params)


events = EventLog()
atexit.register(events.close)
