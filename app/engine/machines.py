"""Machines (who polls, and when it last spoke) and service definitions (what they offer)."""
from __future__ import annotations

import hashlib
import json
import threading
import time

from .. import db
from ..models import Machine, Service, utcnow
from . import controls, statements
from .states import MachineStatus


class _Throttle:
    """Remembers when this process last wrote something, to skip writes that change nothing.

    `take` claims the write: of many concurrent requests from one machine, only the first writes
    (checking and recording separately let every request in flight write the same ping)."""

    def __init__(self, max_entries: int = 50_000):
        self._seen: dict[tuple, tuple[float, object]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def take(self, key: tuple, value: object, interval: float) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and last[1] == value and now - last[0] < interval:
                return False
            if len(self._seen) >= self._max:
                self._seen.clear()  # bounded memory; the cost is one extra write per key
            self._seen[key] = (now, value)
            return True

    def forget(self, key: tuple) -> None:
        """The claimed write failed: let the next request try again."""
        with self._lock:
            self._seen.pop(key, None)


_pings = _Throttle()
_definitions = _Throttle()


def ping(cluster_id: str, machine_id: str, *, ip: str | None, deployment_id: str | None,
         machine_timeout_seconds: float) -> None:
    """Record that a machine spoke. Written at most every few seconds per machine and process,
    always well within the machine timeout, so a live machine is never declared stalled."""
    interval = min(5.0, machine_timeout_seconds / 4)
    key = (cluster_id, machine_id)
    if not _pings.take(key, None, interval):
        return
    now = statements.now_sql()  # the sweeper judges silence on the database's clock too

    def tx():
        (Machine.insert(cluster_id=cluster_id, id=machine_id, ip=ip, deployment_id=deployment_id,
                        status=MachineStatus.ACTIVE,
                        first_seen_at=now, last_ping_at=now)
         .on_conflict(conflict_target=[Machine.cluster_id, Machine.id],
                      update={Machine.last_ping_at: now, Machine.status: MachineStatus.ACTIVE, Machine.ip: ip})
         .execute())

    _write_or_forget(_pings, key, tx)


def register_service(cluster_id: str, service: str, functions: list[dict] | None) -> None:
    """Store the service's definition as its workers send it, when it changed.

    A poll without a function list keeps the stored definition instead of wiping it.
    """
    if functions is None:
        definition = None
    else:
        definition = json.dumps({"name": service, "functions": functions}, sort_keys=True)
    digest = hashlib.sha256((definition or "").encode()).hexdigest()
    key = (cluster_id, service)
    if not _definitions.take(key, digest, 60.0):
        return
    now = utcnow()

    def tx():
        update = {Service.updated_at: now}
        if definition is not None:
            update.update({Service.definition: definition, Service.definition_hash: digest})
        (Service.insert(cluster_id=cluster_id, name=service, definition=definition,
                        definition_hash=digest if definition else None, updated_at=now)
         .on_conflict(conflict_target=[Service.cluster_id, Service.name], update=update)
         .execute())

    _write_or_forget(_definitions, key, tx)
    if functions is not None:  # this process's creates see the functions' back-off defaults at once
        controls.function_defaults.put(cluster_id, service, controls.policies_of(functions))


def _write_or_forget(throttle: _Throttle, key: tuple, tx) -> None:
    try:
        db.unit_of_work(tx, transaction=False, idempotent=True)  # an upsert: running it twice is running it once
    except BaseException:
        throttle.forget(key)
        raise
