"""Credentials: `Authorization: <scheme> <token>`. The scheme word is ignored (the published SDK
sends `Basic <secret>` with no base64, the CLI `Bearer <jwt>`); a bare token is accepted too."""
from __future__ import annotations

import hmac

from ..engine import clusters
from ..errors import Unauthorized, Unavailable
from ..settings import MANAGEMENT_SECRET_MIN_LENGTH, MANAGEMENT_SECRET_PREFIX


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
    cluster_id = clusters.cluster_for_secret(token)
    if cluster_id is None:
        raise Unauthorized("the API secret does not belong to any cluster", code="invalid_credential")
    return cluster_id
