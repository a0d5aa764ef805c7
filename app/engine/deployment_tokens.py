"""Deployment tokens: the credential a deployed function polls with, instead of the cluster secret.

A release mints one (`dpl_sk_<64 hex>`), hands it to the stack as the NoEcho APISecret
parameter, the original's name (the function's DIFFERENTIAL_API_SECRET: the published Node SDK sends it as
`Authorization: Basic <token>` like any secret) and keeps only its sha256 on the deployment row.
It authenticates as the deployment's cluster on the worker routes (claim, result, metrics) of the
deployment's service only, and only while the deployment is deploying, active or inactive (a
superseded function may still be finishing a call); a failure or DELETE of the service's
deployments clears the hash. Lookups are cached per process for a few seconds, so a revocation is
seen within TOKEN_TTL_SECONDS.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .. import db
from ..models import Cluster, Deployment
from . import ids
from .deployments import TOKEN_PREFIX, TOKEN_STATUSES

TOKEN_TTL_SECONDS = 5.0
_MAX = 10_000


@dataclass(frozen=True)
class Scope:
    cluster_id: str
    service: str
    deployment_id: str


_cache: dict[str, tuple[float, Scope | None]] = {}
_lock = threading.Lock()


def is_deployment_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def scope_for_token(token: str) -> Scope | None:
    """The cluster, service and deployment a deployment token stands for; None if it is none (now)."""
    digest = ids.secret_hash(token)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    row = db.unit_of_work(lambda: Deployment.select(Deployment.id, Deployment.cluster_id, Deployment.service)
                          .join(Cluster, on=(Cluster.id == Deployment.cluster_id))
                          .where((Deployment.token_hash == digest) & Deployment.status.in_(TOKEN_STATUSES)
                                 & Cluster.deleted_at.is_null())  # a cluster being deleted authenticates nothing
                          .first(), transaction=False, idempotent=True)
    scope = Scope(row.cluster_id, row.service, row.id) if row is not None else None
    with _lock:
        if len(_cache) >= _MAX:
            _cache.clear()
        _cache[digest] = (now + TOKEN_TTL_SECONDS, scope)
    return scope
