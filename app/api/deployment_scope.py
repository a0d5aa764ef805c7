"""Requests made with a deployment token (engine/deployment_tokens.py): what they may do.

Routing asks `authenticate` first on every cluster-secret route: a deployment token is accepted
only on the worker routes (tag "worker": claim, result, metrics), as its deployment's cluster,
with `x-deployment-id` taken from the token (the function cannot claim another deployment), and
its machine ids namespaced by the deployment: a scoped machine holds only attempts it claimed,
so it can report results only for its own service's jobs. The claim checks the service
(`require_service`).
"""
from __future__ import annotations

from flask import g

from ..engine import deployment_tokens
from ..errors import Forbidden, Unauthorized
from .auth import token_from_header

MAX_ID_LENGTH = 200  # of the machine id columns (routing.MAX_ID_LENGTH)


def authenticate(header: str | None, *, worker_route: bool) -> deployment_tokens.Scope | None:
    """The scope of a deployment token in `header` (None when the credential is something else)."""
    token = token_from_header(header)
    if token is None or not deployment_tokens.is_deployment_token(token):
        return None
    scope = deployment_tokens.scope_for_token(token)
    if scope is None:
        raise Unauthorized("the deployment token is not valid: its deployment failed, or the service's "
                           "deployments were deleted; release a new deployment", code="invalid_credential")
    if not worker_route:
        raise Forbidden("a deployment token may only claim and report its service's jobs (the worker routes); "
                        "use the cluster secret or an access point to call", code="deployment_token_scope")
    return scope


def machine_id_for(scope: deployment_tokens.Scope, machine_id: str | None) -> str | None:
    if not machine_id:
        return None
    prefix = f"{scope.deployment_id}:"
    return prefix + machine_id[:MAX_ID_LENGTH - len(prefix)]


def require_service(service: str) -> None:
    """403 unless the request's credential may poll `service` (any credential but a deployment token may)."""
    scope = g.get("deployment_scope")
    if scope is not None and scope.service != service:
        raise Forbidden(f"this deployment token belongs to service {scope.service!r}, not {service!r}",
                        {"service": service}, code="deployment_token_scope")
