"""Who may read the package registry (api/registry.py): a registry token, or the management secret.

npm sends its `_authToken` as `Authorization: Bearer <token>`; pip sends an index URL's credentials
as HTTP Basic, so the token is the password there (any user name). The credential is checked first,
before any path parameter (routing.py's guard, auth kind "registry"); whether a token may read the
cluster the path names is `require_cluster`'s, in the view. Tokens are looked up on every request
(engine/registry_tokens.py), so a revoked one answers 401 at once on every replica.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from ..engine import registry_tokens as tokens
from ..errors import Unauthorized
from .auth import token_from_header


@dataclass(frozen=True)
class Reader:
    """A checked registry credential: `cluster_id` None means the management secret (every cluster)."""

    cluster_id: str | None

    def require_cluster(self, cluster_id: str | None) -> None:
        """401 unless this credential may read `cluster_id` (None: a path naming none of ours)."""
        if self.cluster_id is not None and cluster_id is not None and cluster_id != self.cluster_id:
            raise Unauthorized(f"the registry token does not belong to cluster {cluster_id!r}",
                               code="invalid_credential")


def _candidates(header: str | None) -> list[str]:
    """The credential as sent (`Bearer <t>`, or a bare `Basic <t>`), then Basic's password if the
    rest is base64 of `user:password` (what pip sends for URL credentials)."""
    token = token_from_header(header)
    if token is None:
        return []
    found = [token]
    if header.strip().lower().startswith("basic "):
        try:
            decoded = base64.b64decode(token, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        _user, colon, password = decoded.partition(":")
        if colon and password:
            found.append(password)
    return found


def require_reader(header: str | None, management_secret: str | None) -> Reader:
    """The reader this Authorization header is, or 401."""
    candidates = _candidates(header)
    if not candidates:
        raise Unauthorized("missing credential: npm sends its _authToken (a registry token) as 'Authorization: "
                           "Bearer <token>'; pip sends the password of the index URL's credentials",
                           code="missing_credential")
    for token in candidates:
        if management_secret and hmac.compare_digest(token.encode(), management_secret.encode()):
            return Reader(None)
    for token in candidates:
        found = tokens.reader_for_token(token) if tokens.looks_like_token(token) else None
        if found is not None:
            tokens.record_use(found.token_id)
            return Reader(found.cluster_id)
    raise Unauthorized("the credential is neither a registry token (revoked ones stop at once) nor the management "
                       "secret", code="invalid_credential")
