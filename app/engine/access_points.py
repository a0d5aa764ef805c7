"""Access points: named tokens that may call some services of one cluster, and nothing else.

A token is kept only as its sha256 (the unique index finds it); it is shown once, when it is made
or rotated (PUT always mints a new one: the old one stops working with that commit). Lookups are
never cached, so a rotated or deleted token stops working at once in every process of every
replica: an indexed read per call costs less than being wrong for a minute (the original's shared
cache let a token work on another cluster's path for up to 60 s).

`last_used_at` is written at most once a minute per access point per process (`record_use`), so a
call costs no write of its own; each use is in the activity log (`accessPointUsed`) anyway.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .. import db
from ..errors import NotFound, ValidationFailed
from ..models import AccessPoint, Cluster, utcnow
from . import clusters, ids
from .clusters import iso

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sk_ap_"
ALL_SERVICES = "*"
MAX_SERVICES = 100
NAME_MAX = 128
# A name is one URL path segment; a service name as a worker may register it (schemas.NAME), minus
# the characters that would make the comma-separated form ambiguous.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SERVICE = re.compile(r"^[^,\s\x00-\x1f\x7f-\x9f][^,\x00-\x1f\x7f-\x9f]*$")
SERVICE_MAX = 200
USE_WRITE_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Grant:
    """What a presented token may do: call `services` of `cluster_id`, as access point `name`."""

    cluster_id: str
    name: str
    services: tuple[str, ...]
    pk: int = 0

    def allows(self, service: str) -> bool:
        return ALL_SERVICES in self.services or service in self.services  # "*": every service, as the original


def grant_for_token(token: str) -> Grant | None:
    """The access point this token belongs to, or None; read from the database on every call."""
    digest = ids.secret_hash(token)
    # A cluster being deleted (deleted_at set) takes no more calls, before its rows are gone.
    row = db.unit_of_work(lambda: AccessPoint.select(AccessPoint.pk, AccessPoint.cluster_id, AccessPoint.name,
                                                     AccessPoint.services)
                          .join(Cluster, on=(Cluster.id == AccessPoint.cluster_id))
                          .where((AccessPoint.token_hash == digest) & Cluster.deleted_at.is_null()).first(),
                          transaction=False, idempotent=True)
    if row is None:
        return None
    return Grant(row.cluster_id, row.name, tuple(json.loads(row.services)), row.pk)


# --- management -----------------------------------------------------------------------------------

def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid request: {field} {message}", {"fields": [{"field": field, "message": message}]})


def check_name(name: str) -> str:
    if len(name) > NAME_MAX or not _NAME.match(name):
        raise _invalid("name", f"must be 1 to {NAME_MAX} letters, digits, '_', '.' or '-', starting with a letter "
                               "or digit")
    return name


def parse_services(value) -> list[str]:
    """`allowedServices` as the original takes it (comma-separated text, "*" for every service) or
    as a JSON list of names; trimmed, without duplicates, in the order given."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise _invalid("allowedServices", "must be comma-separated service names (\"*\": every service) or a list "
                                          "of them")
    items = list(dict.fromkeys(item for item in items if item))
    if not items:
        raise _invalid("allowedServices", "names no service (\"*\" allows every service)")
    if len(items) > MAX_SERVICES:
        raise _invalid("allowedServices", f"names {len(items)} services, more than {MAX_SERVICES}")
    for i, item in enumerate(items):
        if item != ALL_SERVICES and (len(item) > SERVICE_MAX or not _SERVICE.match(item)):
            raise _invalid(f"allowedServices[{i}]", f"is not a service name (1 to {SERVICE_MAX} characters, no "
                                                    "comma or control characters)")
    return [ALL_SERVICES] if ALL_SERVICES in items else items


def _public(row: AccessPoint) -> dict:
    return {"name": row.name, "allowedServices": json.loads(row.services), "createdAt": iso(row.created_at),
            "rotatedAt": iso(row.rotated_at), "lastUsedAt": iso(row.last_used_at)}


def put(cluster_id: str, name: str, services: list[str]) -> dict:
    """Create the access point, or replace its services; either way a new token, answered once."""
    token = TOKEN_PREFIX + secrets.token_hex(32)
    digest = ids.secret_hash(token)

    def tx() -> dict:
        clusters.get_cluster(cluster_id)
        now = utcnow()
        # One statement, so two PUTs of one new name at once cannot both insert (the last wins).
        (AccessPoint.insert(cluster_id=cluster_id, name=name, token_hash=digest, services=json.dumps(services),
                            created_at=now, rotated_at=now)
         .on_conflict(conflict_target=[AccessPoint.cluster_id, AccessPoint.name],
                      update={AccessPoint.token_hash: digest, AccessPoint.services: json.dumps(services),
                              AccessPoint.rotated_at: now})
         .execute())
        return _public(AccessPoint.get(AccessPoint.token_hash == digest))

    # Not idempotent: run twice, the first token would be answered to nobody (a new one per run is
    # fine, the caller gets the last); a lost commit answers 503 and the operator asks again.
    return {"token": token, **db.unit_of_work(tx)}


def list_for(cluster_id: str) -> list[dict]:
    def tx() -> list[dict]:
        clusters.get_cluster(cluster_id)
        rows = AccessPoint.select().where(AccessPoint.cluster_id == cluster_id).order_by(AccessPoint.name)
        return [_public(row) for row in rows]

    return db.unit_of_work(tx, idempotent=True)


def delete(cluster_id: str, name: str) -> None:
    def tx() -> int:
        clusters.get_cluster(cluster_id)
        return (AccessPoint.delete()
                .where((AccessPoint.cluster_id == cluster_id) & (AccessPoint.name == name)).execute())

    if not db.unit_of_work(tx):
        raise NotFound(f"access point {name!r} does not exist in cluster {cluster_id!r}",
                       {"clusterId": cluster_id, "name": name}, code="access_point_not_found")


# --- use ------------------------------------------------------------------------------------------

class _UseWrites:
    """Which access points had `last_used_at` written by this process, and when (monotonic)."""

    def __init__(self, every: float = USE_WRITE_EVERY_SECONDS, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._every, self._size, self._clock = every, size, clock
        self._last: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def due(self, key: tuple[str, int]) -> bool:
        """True at most once per `every` seconds per key, (cluster, access point), and claims that turn."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._every:
                return False
            if len(self._last) >= self._size:
                self._last.clear()  # at worst one extra write each
            self._last[key] = now
            return True


_uses = _UseWrites()


def record_use(grant: Grant) -> None:
    """Note that `grant` was used now: `last_used_at`, written at most once a minute per process.
    Best effort: a failed write never fails the call it records."""
    if not _uses.due((grant.cluster_id, grant.pk)):
        return
    try:
        db.unit_of_work(lambda: AccessPoint.update(last_used_at=utcnow()).where(AccessPoint.pk == grant.pk).execute(),
                        transaction=False, idempotent=True)
    except Exception:
        log.warning("could not record the use of access point %r of cluster %s", grant.name, grant.cluster_id,
                    exc_info=True)
