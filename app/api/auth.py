"""Credentials: `Authorization: <scheme> <token>`. The scheme word is ignored (the published SDK
sends `Basic <secret>` with no base64, the CLI `Bearer <jwt>`); a bare token is accepted too.

A refused cluster secret is remembered for a few seconds (by its hash, in a bounded LRU), so that a
client retrying a wrong secret costs no database lookup per request (audit L5). Creating a cluster
forgets them all; another process's new cluster is at most `FAILURE_TTL_SECONDS` late, and its
secret did not exist before, so nobody can have been refused it.
"""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from typing import Callable

from dataclasses import dataclass

from ..engine import access_points, clusters
from ..errors import Forbidden, Unauthorized, Unavailable
from ..settings import MANAGEMENT_SECRET_MIN_LENGTH, MANAGEMENT_SECRET_PREFIX


FAILURE_TTL_SECONDS = 10.0
FAILURE_CACHE_SIZE = 4096


class _RecentFailures:
    """Hashes of recently refused tokens, each for `ttl` seconds; the oldest go first when full."""

    def __init__(self, ttl: float = FAILURE_TTL_SECONDS, size: int = FAILURE_CACHE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._size, self._clock = ttl, size, clock
        self._items: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            expires = self._items.get(key)
            if expires is None:
                return False
            if expires < self._clock():
                del self._items[key]
                return False
            return True

    def add(self, key: bytes) -> None:
        with self._lock:
            self._items[key] = self._clock() + self._ttl
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_failures = _RecentFailures()
# Tokens that are no access point, kept apart from the refused cluster secrets (audit S3: one
# cache answered both kinds). Safe to remember: a token becomes an access point only by being
# minted (random, so never refused before); a rotation or deletion makes tokens fail, not pass.
_not_access_points = _RecentFailures()


def forget_failures() -> None:
    """A cluster was created: a token refused a moment ago may be its secret now."""
    _failures.clear()
    _not_access_points.clear()


def token_from_header(header: str | None) -> str | None:
    if not header:
        return None
    parts = header.strip().split(None, 1)
    token = parts[-1].strip() if parts else ""
    return token or None


def require_management(header: str | None, management_secret: str | None) -> None:
    if not management_secret:
        raise Unavailable(f"the management API is off: set MANAGEMENT_SECRET (it starts with "
                          f"{MANAGEMENT_SECRET_PREFIX} and is at least {MANAGEMENT_SECRET_MIN_LENGTH} characters "
                          f"long, e.g. {MANAGEMENT_SECRET_PREFIX}$(openssl rand -base64 32)) in the control-plane's "
                          "environment and restart it", code="management_secret_not_set")
    token = token_from_header(header)
    if token is None:
        raise Unauthorized("missing credential: send 'Authorization: Basic <management secret>'",
                           code="missing_credential")
    if not hmac.compare_digest(token.encode(), management_secret.encode()):
        raise Unauthorized("the management secret is not correct", code="invalid_credential")


def require_cluster(header: str | None) -> str:
    """The cluster the API secret belongs to; the secret alone decides it, never the URL."""
    token = token_from_header(header)
    if token is None:
        raise Unauthorized("missing credential: send 'Authorization: Basic <cluster API secret>'",
                           code="missing_credential")
    key = hashlib.sha256(token.encode()).digest()
    cluster_id = None if key in _failures else clusters.cluster_for_secret(token)
    if cluster_id is None:
        _failures.add(key)
        raise Unauthorized("the API secret does not belong to any cluster", code="invalid_credential")
    return cluster_id


@dataclass(frozen=True)
class Caller:
    """Who makes a call on a cluster's path: the cluster's own secret, or one of its access points."""

    cluster_id: str
    access_point: str | None  # its name; None for the cluster secret
    grant: access_points.Grant | None = None  # the access point's; None for the cluster secret

    def require(self, service: str) -> None:
        """403 unless this caller may call `service` (the cluster secret may call every one)."""
        if self.grant is not None and not self.grant.allows(service):
            raise Forbidden(f"access point {self.grant.name!r} may not call service {service!r}; it may call "
                            f"{', '.join(self.grant.services) or 'no service'}",
                            {"accessPoint": self.grant.name, "service": service}, code="service_not_allowed")


def require_caller(header: str | None, cluster_id: str, service: str | None) -> Caller:
    """A credential that may call `service` of `cluster_id` (the path's cluster): an access point of
    that cluster allowed that service (403 if not allowed), or that cluster's API secret. Any other
    credential, another cluster's included, is 401: it never reaches the call. `service` None
    checks only the credential (the caller then checks `Caller.require` once it knows the service)."""
    token = token_from_header(header)
    if token is None:
        raise Unauthorized("missing credential: send 'Authorization: Bearer <access-point token or cluster API "
                           "secret>'", code="missing_credential")
    key = hashlib.sha256(token.encode()).digest()
    # Its own refusal cache: a token refused by a cluster-secret route a moment ago may still be a
    # good access point here; a wrong token retried costs one lookup of each kind, not one a request.
    grant = None if key in _not_access_points else access_points.grant_for_token(token)
    if grant is None:
        _not_access_points.add(key)
    if grant is not None:
        if grant.cluster_id != cluster_id:
            raise Unauthorized(f"the credential does not belong to cluster {cluster_id!r}", code="invalid_credential")
        caller = Caller(cluster_id, grant.name, grant)
    else:
        owner = None if key in _failures else clusters.cluster_for_secret(token)
        if owner is None:
            _failures.add(key)
            raise Unauthorized("the credential is neither an access point nor the API secret of any cluster",
                               code="invalid_credential")
        if owner != cluster_id:
            raise Unauthorized(f"the credential does not belong to cluster {cluster_id!r}", code="invalid_credential")
        caller = Caller(cluster_id, None)
    if service is not None:
        caller.require(service)
    return caller
