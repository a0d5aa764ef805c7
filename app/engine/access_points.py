"""Access points: named tokens that may call some services of one cluster, and nothing else.

A token is kept only as its sha256 (the unique index finds it); it is shown once, when it is made
or rotated. Lookups are never cached, so a rotated or deleted token stops working at once in every
process of every replica: an indexed read per call costs less than being wrong for a minute (the
original's shared cache let a token work on another cluster's path for up to 60 s).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .. import db
from ..models import AccessPoint
from . import ids


@dataclass(frozen=True)
class Grant:
    """What a presented token may do: call `services` of `cluster_id`, as access point `name`."""

    cluster_id: str
    name: str
    services: tuple[str, ...]

    def allows(self, service: str) -> bool:
        return "*" in self.services or service in self.services  # "*": every service, as the original


def grant_for_token(token: str) -> Grant | None:
    """The access point this token belongs to, or None; read from the database on every call."""
    digest = ids.secret_hash(token)
    row = db.unit_of_work(lambda: AccessPoint.select(AccessPoint.cluster_id, AccessPoint.name, AccessPoint.services)
                          .where(AccessPoint.token_hash == digest).first(), transaction=False, idempotent=True)
    if row is None:
        return None
    return Grant(row.cluster_id, row.name, tuple(json.loads(row.services)))
