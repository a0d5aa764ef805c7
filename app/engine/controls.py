"""Retries on rejection: a call's back-off policy from its wire form, and its function's default.

A call may carry `retryOnRejection`; one that does not gets the policy its function declares in
the service definition its workers send (POST /jobs-request `functions[].retryOnRejection`). Those
definitions are cached per service and process, so a create does not read services on every call:
a definition this process stores replaces its entry at once, and any process that stores a
changed one notifies signals.SERVICES_TOPIC, which clears every other process's entries. Entries
last signals.LISTENING_CACHE_SECONDS while the listener hears such changes, DEFAULTS_TTL_SECONDS
without.
"""
from __future__ import annotations

import json
import threading
import time

from .. import db
from ..models import Service
from .signals import SERVICES_TOPIC, cache_seconds, hub
from .statements import Backoff

DEFAULTS_TTL_SECONDS = 5.0
_MAX_ENTRIES = 50_000

# What an absent field of a policy means (api/schemas.py publishes these as its defaults).
INITIAL_DELAY_SECONDS = 1.0
FACTOR = 2.0
MAX_DELAY_SECONDS = 300.0
JITTER = 0.0


def backoff_from_wire(policy: dict | None) -> Backoff | None:
    """A `retryOnRejection` object (validated by the schema) as the engine's policy."""
    if not policy:
        return None
    return Backoff(attempts=int(policy["attempts"]),
                   initial_ms=round(1000 * policy.get("initialDelaySeconds", INITIAL_DELAY_SECONDS)),
                   factor=_stored(policy.get("factor", FACTOR)),
                   max_ms=round(1000 * policy.get("maxDelaySeconds", MAX_DELAY_SECONDS)),
                   jitter=_stored(policy.get("jitter", JITTER)))


def _stored(value: float) -> float:
    """Six decimals, as PostgreSQL's REAL keeps them: a valid jitter of 1.7e-264 (the OpenAPI
    fuzzer's) underflows REAL, and the create failed with a 500."""
    return round(float(value), 6)


def policies_of(functions: list[dict] | None) -> dict[str, Backoff]:
    """Per function name, the policy a definition's functions declare (those that declare one)."""
    out = {}
    for fn in functions or ():
        policy = backoff_from_wire(fn.get("retryOnRejection")) if isinstance(fn, dict) else None
        if policy is not None:
            out[fn["name"]] = policy
    return out


class _Defaults:
    """`clear()` starts a new epoch: a read that began before it does not put what it read (it may
    be the definition the clearing change replaced)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, dict[str, Backoff]]] = {}
        self.epoch = 0

    def get(self, cluster_id: str, service: str, target_fn: str) -> Backoff | None:
        key = (cluster_id, service)
        with self._lock:
            entry, epoch = self._entries.get(key), self.epoch
        if entry is None or time.monotonic() - entry[0] > cache_seconds(DEFAULTS_TTL_SECONDS):
            policies = _read(cluster_id, service)
            self.put(cluster_id, service, policies, epoch)
        else:
            policies = entry[1]
        return policies.get(target_fn)

    def put(self, cluster_id: str, service: str, policies: dict[str, Backoff], epoch: int | None = None) -> None:
        """Keep the policies read (unless cleared since `epoch`) or just written (no epoch)."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()  # bounded memory; the cost is one read per service
            self._entries[(cluster_id, service)] = (time.monotonic(), policies)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.epoch += 1


def _read(cluster_id: str, service: str) -> dict[str, Backoff]:
    row = db.unit_of_work(lambda: Service.select(Service.definition)
                          .where((Service.cluster_id == cluster_id) & (Service.name == service)).first(),
                          transaction=False, idempotent=True)
    if row is None or not row.definition:
        return {}
    try:
        return policies_of(json.loads(row.definition).get("functions"))
    except (ValueError, KeyError, TypeError, AttributeError):  # a definition stored before these fields
        return {}


function_defaults = _Defaults()
hub.on_topic(SERVICES_TOPIC, function_defaults.clear)  # a definition changed elsewhere; or a listener reconnect


def default_backoff(cluster_id: str, service: str, target_fn: str) -> Backoff | None:
    """The back-off policy `service.target_fn` declares, if any (cached, see the module doc)."""
    return function_defaults.get(cluster_id, service, target_fn)
