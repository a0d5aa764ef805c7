"""Registry tokens: read one cluster's client libraries (npm, pip) and nothing else.

A token (`drt_` + 64 hex) is shown once, when it is made; only its sha256 is kept (the unique index
finds it). Lookups are never cached, so a revoked token answers 401 at once on every replica.
`last_used_at` is written at most once a minute per token per process (`record_use`): installs
fetch many files, and a read must not cost a write each.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from .. import db
from ..errors import Conflict, NotFound
from ..models import Cluster, RegistryToken, utcnow
from ..observability.events import events
from . import clusters, ids
from .clusters import iso

TOKEN_PREFIX = "drt_"
MAX_TOKENS = 100  # per cluster
NAME_MAX = 128
USE_WRITE_EVERY_SECONDS = 60.0


class EventType:
    CREATED = "registryTokenCreated"
    REVOKED = "registryTokenRevoked"


@dataclass(frozen=True)
class Reader:
    """Who presented a registry token: its id and the one cluster it reads."""

    token_id: str
    cluster_id: str


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def reader_for_token(token: str) -> Reader | None:
    """The token's owner, read from the database every time; None for no (or a revoked) token."""
    digest = ids.secret_hash(token)
    row = db.unit_of_work(lambda: RegistryToken.select(RegistryToken.id, RegistryToken.cluster_id)
                          .join(Cluster, on=(Cluster.id == RegistryToken.cluster_id))
                          .where((RegistryToken.token_hash == digest) & Cluster.deleted_at.is_null()).first(),
                          transaction=False, idempotent=True)
    return Reader(row.id, row.cluster_id) if row else None


_last_write: dict[str, float] = {}
_last_write_lock = threading.Lock()
_LAST_WRITE_SIZE = 10_000


def record_use(token_id: str, clock=time.monotonic) -> bool:
    """Set last_used_at unless this process did so for this token within the minute; whether it wrote."""
    now = clock()
    with _last_write_lock:
        if now - _last_write.get(token_id, float("-inf")) < USE_WRITE_EVERY_SECONDS:
            return False
        if len(_last_write) >= _LAST_WRITE_SIZE:
            _last_write.clear()  # bounded: at worst one more write per token
        _last_write[token_id] = now
    db.unit_of_work(lambda: RegistryToken.update(last_used_at=utcnow()).where(RegistryToken.id == token_id).execute(),
                    transaction=False, idempotent=True)
    return True


def _public(row: RegistryToken) -> dict:
    return {"id": row.id, "name": row.name, "createdAt": iso(row.created_at), "lastUsedAt": iso(row.last_used_at)}


def create(cluster_id: str, name: str) -> dict:
    """A new token for the cluster (its only showing); 409 past MAX_TOKENS."""
    token = TOKEN_PREFIX + secrets.token_hex(32)

    def tx() -> dict:
        clusters.get_cluster(cluster_id)
        db.dialect.lock_key(f"registry-tokens/{cluster_id}")  # the count and the insert, one at a time
        count = RegistryToken.select().where(RegistryToken.cluster_id == cluster_id).count()
        if count >= MAX_TOKENS:
            raise Conflict(f"cluster {cluster_id!r} already has {count} registry tokens (at most {MAX_TOKENS}); revoke "
                           "one you no longer use (DELETE .../registry-tokens/<id>)",
                           {"clusterId": cluster_id, "limit": MAX_TOKENS}, code="too_many_registry_tokens")
        row = RegistryToken(id=ids.job_id(), cluster_id=cluster_id, name=name, token_hash=ids.secret_hash(token),
                            created_at=utcnow())
        row.save(force_insert=True)
        return _public(row)

    made = db.unit_of_work(tx)
    events.record(cluster_id, EventType.CREATED, tokenId=made["id"], name=name)
    return {"id": made["id"], "name": made["name"], "token": token, "createdAt": made["createdAt"]}


def list_for(cluster_id: str) -> list[dict]:
    def tx() -> list[dict]:
        clusters.get_cluster(cluster_id)
        rows = (RegistryToken.select().where(RegistryToken.cluster_id == cluster_id)
                .order_by(RegistryToken.created_at, RegistryToken.id))
        return [_public(row) for row in rows]

    return db.unit_of_work(tx, idempotent=True)


def delete(cluster_id: str, token_id: str) -> None:
    def tx() -> int:
        clusters.get_cluster(cluster_id)
        return (RegistryToken.delete()
                .where((RegistryToken.cluster_id == cluster_id) & (RegistryToken.id == token_id)).execute())

    if not db.unit_of_work(tx):
        raise NotFound(f"registry token {token_id!r} does not exist in cluster {cluster_id!r}",
                       {"clusterId": cluster_id, "tokenId": token_id}, code="registry_token_not_found")
    events.record(cluster_id, EventType.REVOKED, tokenId=token_id)
