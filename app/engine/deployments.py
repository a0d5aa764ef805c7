"""Cloud deployments: a service's bundle, released as a CloudFormation stack (one per service) that
makes its Lambda function; the stack's fate, learned from SNS, decides which deployment is active.

The state machine is engine/states.py's (docs/state-machine.md draws it). Every move is one
conditional UPDATE on the expected status, so two requests (or a request and an SNS delivery)
racing on one deployment cannot both move it. At most one deployment of a service is `deploying`
at a time (a second release is refused), so a stack event always has one candidate:

- matched by its ClientRequestToken (`<deployment id>-<release number>`, one per release, so an
  event of an earlier release of the same deployment is stale); under moto the token is the
  string 'None', so the fallback is the newest `deploying` deployment of that stack;
- only stack-level events count (cloud/sns.py); an event for a deployment no longer `deploying`
  is stale and changes nothing;
- success: that deployment turns active, the service's previous active one inactive; failure
  (a create deleted by OnFailure=DELETE, a rolled-back update): that deployment fails, and the
  one active before stays active, since its stack rolled back to it.

The function does not get the cluster secret: each release mints a deployment token (shown only
to the stack, kept as its sha256) that authenticates as the cluster on the worker routes of this
service only, while the deployment is deploying, active or inactive (engine/deployment_tokens.py).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
import time

from .. import db
from ..cloud import cloudformation, logs as cloud_logs
from ..errors import BadRequest, Conflict, NotFound, NotImplementedFeature, UpstreamFailed
from ..models import Asset, Deployment, utcnow
from ..observability.events import events
from ..settings import Settings
from . import assets, clusters, ids
from .signals import SERVICES_TOPIC, cache_seconds, hub, notify_in_transaction
from .states import DeploymentEventType as E, DeploymentStatus as S, deployment_allowed

log = logging.getLogger(__name__)

PROVIDER = "lambda"
TOKEN_PREFIX = "dpl_sk_"
CLOUD_SETTINGS = (("ASSET_UPLOAD_BUCKET", "asset_upload_bucket"),
                  ("DEPLOYMENT_TEMPLATE_BUCKET", "deployment_template_bucket"),
                  ("DEPLOYMENT_SNS_TOPIC", "deployment_sns_topic"),
                  ("DEPLOYMENT_DEFAULT_SERVICE_ROLE", "deployment_default_service_role"),
                  ("DEPLOYMENT_RUNTIME_ROLE", "deployment_runtime_role"))
LIST_LIMIT = 100
DEFAULT_LOG_WINDOW_MS = 3600_000
TOKEN_STATUSES = (S.DEPLOYING, S.ACTIVE, S.INACTIVE)  # a deployment token works while its function may run


def _require_public_url(settings: Settings) -> None:
    if not settings.public_url:
        raise Conflict("PUBLIC_URL is not set: the deployed function needs the control-plane's public URL "
                       "(DIFFERENTIAL_ENDPOINT); set PUBLIC_URL and restart, then release again",
                       {"setting": "PUBLIC_URL"}, code="public_url_not_set")


def require_cloud(settings: Settings) -> None:
    """501 naming every cloud setting that is missing (each is one output of `pulumi up`)."""
    missing = [name for name, field in CLOUD_SETTINGS if not getattr(settings, field)]
    if missing:
        raise NotImplementedFeature(
            f"cloud deployments are off on this control-plane: set {', '.join(missing)} (the Pulumi program's "
            "outputs; README 'Deploy a service') and restart it", {"missing": missing}, code="cloud_not_configured")


# --- answers ------------------------------------------------------------------------------------

def _meta(row: Deployment) -> dict:
    try:
        return json.loads(row.meta) if row.meta else {}
    except ValueError:
        return {}


def _bundles(rows: list[Deployment]) -> dict[str, dict]:
    ids_ = [r.id for r in rows]
    if not ids_:
        return {}
    found = Asset.select(Asset.target_id, Asset.size, Asset.sha256).where(
        (Asset.kind == "service_bundle") & (Asset.target_id.in_(ids_)) & (Asset.status == "uploaded"))
    return {a.target_id: {"size": a.size, "sha256": a.sha256} for a in found}


def describe(row: Deployment, bundle: dict | None) -> dict:
    return {"id": row.id, "clusterId": row.cluster_id, "service": row.service, "status": row.status,
            "provider": row.provider, "runtime": row.runtime, "serviceModule": row.service_module,
            "createdAt": clusters.iso(row.created_at), "expiresAt": clusters.iso(row.expires_at),
            "stackName": row.stack_name, "functionName": row.function_name, "reason": row.reason,
            "releasedAt": clusters.iso(row.released_at), "activatedAt": clusters.iso(row.activated_at),
            "bundle": bundle}


def _answer(row: Deployment) -> dict:
    return describe(row, _bundles([row]).get(row.id))


def _answers(rows: list[Deployment]) -> list[dict]:
    bundles = _bundles(rows)
    return [describe(r, bundles.get(r.id)) for r in rows]


def _get(cluster_id: str, service: str, deployment_id: str) -> Deployment:
    row = Deployment.get_or_none((Deployment.id == deployment_id) & (Deployment.cluster_id == cluster_id)
                                 & (Deployment.service == service))
    if row is None:
        raise NotFound(f"deployment {deployment_id!r} of service {service!r} does not exist in cluster {cluster_id!r}",
                       {"deploymentId": deployment_id}, code="deployment_not_found")
    return row


def _move(row: Deployment, target: str, **changes) -> bool:
    """Move `row` from its current status to `target` (one conditional UPDATE); whether it moved."""
    if not deployment_allowed(row.status, target):
        return False
    changes.setdefault("updated_at", utcnow())
    moved = (Deployment.update(status=target, **changes)
             .where((Deployment.id == row.id) & (Deployment.status == row.status)).execute())
    if moved and S.ACTIVE in (row.status, target):  # what its service's calls carry changes (active_for)
        notify_in_transaction([SERVICES_TOPIC])
    if moved:
        row.status = target
        for key, value in changes.items():
            setattr(row, key, value)
    return bool(moved)


# --- which deployment a service's calls carry (per process, briefly cached) ---------------------

ACTIVE_TTL_SECONDS = 5.0  # without the notification listener (signals.cache_seconds)
_ACTIVE_MAX = 20_000
_active: dict[tuple[str, str], tuple[float, str | None]] = {}  # key -> (read at, deployment id)
_active_lock = threading.Lock()
_active_epoch = [0]  # bumped by each clear: a read that began before it does not put what it read
_loading: dict[tuple[str, str], threading.Lock] = {}  # the keys being read now, one lock each
_loading_lock = threading.Lock()


def _fresh(hit: tuple[float, str | None] | None) -> bool:
    return hit is not None and time.monotonic() - hit[0] <= cache_seconds(ACTIVE_TTL_SECONDS)


def active_for(cluster_id: str, service: str) -> str | None:
    """The id of the service's active deployment, or None: cached per process, so a call pays one
    indexed read per service now and then. An activation or inactivation anywhere notifies
    SERVICES_TOPIC (`_move`), which clears every process's entries; without the listener they last
    ACTIVE_TTL_SECONDS. One thread reads a key while the others wait for its answer: a burst of
    calls would otherwise all miss at once."""
    key = (cluster_id, service)
    with _active_lock:
        hit = _active.get(key)
    if _fresh(hit):
        return hit[1]
    with _loading_lock:
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _active_lock:
            hit, epoch = _active.get(key), _active_epoch[0]
        if _fresh(hit):
            return hit[1]  # read by the thread we waited for
        try:
            row = db.unit_of_work(lambda: Deployment.select(Deployment.id).where(
                (Deployment.cluster_id == cluster_id) & (Deployment.service == service)
                & (Deployment.status == S.ACTIVE)).order_by(Deployment.created_at.desc()).first(),
                transaction=False, idempotent=True)
            value = row.id if row is not None else None
            with _active_lock:
                if epoch == _active_epoch[0]:
                    if len(_active) >= _ACTIVE_MAX:
                        _active.clear()
                    _active[key] = (time.monotonic(), value)
        finally:
            with _loading_lock:
                _loading.pop(key, None)
    return value


def forget_active(cluster_id: str, service: str) -> None:
    with _active_lock:
        _active.pop((cluster_id, service), None)
        _active_epoch[0] += 1


def _forget_every_active() -> None:
    with _active_lock:
        _active.clear()
        _active_epoch[0] += 1


hub.on_topic(SERVICES_TOPIC, _forget_every_active)  # an activation elsewhere; or a listener reconnect


# --- create, read -------------------------------------------------------------------------------

def create(cluster_id: str, service: str, *, runtime: str, service_module: str | None,
           expiry_minutes: float) -> dict:
    if runtime not in cloudformation.RUNTIMES:
        raise BadRequest(f"runtime {runtime!r} is not one of {', '.join(cloudformation.RUNTIMES)}",
                         {"field": "runtime"}, code="validation_failed")
    if runtime in cloudformation.PYTHON_RUNTIMES and not service_module:
        raise BadRequest(f"a {runtime} deployment needs serviceModule ('package.module:attribute', where the "
                         "Python SDK's Lambda handler finds the service)", {"field": "serviceModule"},
                         code="validation_failed")
    name = cloudformation.resource_name(cluster_id, service)
    now = utcnow()

    def tx() -> Deployment:
        clusters.get_cluster(cluster_id)
        return Deployment.create(
            id=f"dpl-{ids.job_id()}", cluster_id=cluster_id, service=service, status=S.UPLOADING,
            provider=PROVIDER, runtime=runtime, stack_name=name, function_name=name,
            service_module=service_module, created_at=now, updated_at=now,
            expires_at=now + dt.timedelta(minutes=expiry_minutes), wakeups=0)

    row = db.unit_of_work(tx)
    events.record(cluster_id, E.CREATED, deployment_id=row.id, service=service, runtime=runtime,
                  stackName=row.stack_name)
    return describe(row, None)


def list_for_service(cluster_id: str, service: str, limit: int = LIST_LIMIT) -> list[dict]:
    def tx():
        clusters.get_cluster(cluster_id)
        rows = list(Deployment.select().where((Deployment.cluster_id == cluster_id) & (Deployment.service == service))
                    .order_by(Deployment.created_at.desc(), Deployment.id.desc()).limit(limit))
        return _answers(rows)

    return db.unit_of_work(tx, transaction=False, idempotent=True)


def list_for_cluster(cluster_id: str, limit: int = LIST_LIMIT) -> list[dict]:
    """The cluster's newest deployments, every service's (GET /clusters/:id, the console)."""
    def tx():
        rows = list(Deployment.select().where(Deployment.cluster_id == cluster_id)
                    .order_by(Deployment.created_at.desc(), Deployment.id.desc()).limit(limit))
        return _answers(rows)

    return db.unit_of_work(tx, transaction=False, idempotent=True)


def get(cluster_id: str, service: str, deployment_id: str) -> dict:
    def tx():
        clusters.get_cluster(cluster_id)
        return _answer(_get(cluster_id, service, deployment_id))

    return db.unit_of_work(tx, transaction=False, idempotent=True)


# --- release, rollback ----------------------------------------------------------------------------

def _stack_request(row: Deployment, settings: Settings, *, bucket: str, key: str, token: str,
                   request_token: str) -> cloudformation.StackRequest:
    return cloudformation.StackRequest(row.stack_name, request_token, {
        "ClusterId": row.cluster_id, "ServiceName": row.service, "DeploymentId": row.id,
        "FunctionName": row.function_name, "UploadBucketName": bucket, "UploadBucketKey": key,
        # APISecret (the original's name) carries the deployment token, never the cluster secret.
        "APISecret": token, "ControlPlaneEndpoint": settings.public_url.rstrip("/"),
        "Runtime": row.runtime, "Handler": cloudformation.handler_for(row.runtime),
        "ServiceModule": row.service_module or "", "ExecutionRole": settings.deployment_runtime_role,
    })


def _release(row: Deployment, settings: Settings, store, *, bundle: dict, kind: str) -> dict:
    """Mint a token, move `row` to deploying, send the stack create or update. The row is committed
    as `deploying` before the stack call: moto delivers the stack's SNS events inside that call."""
    if store.bucket is None:
        raise Conflict("the asset store is a local folder, which Lambda cannot read: set ASSET_UPLOAD_BUCKET",
                       {"setting": "ASSET_UPLOAD_BUCKET"}, code="cloud_not_configured")
    token = TOKEN_PREFIX + secrets.token_hex(32)
    source = row.status

    def tx() -> str:
        busy = (Deployment.select(Deployment.id).where(
            (Deployment.cluster_id == row.cluster_id) & (Deployment.service == row.service)
            & (Deployment.status == S.DEPLOYING) & (Deployment.id != row.id)).first())
        if busy is not None:
            raise Conflict(f"deployment {busy.id!r} of service {row.service!r} is still deploying; wait until it "
                           "is active or failed, then release again", {"deploymentId": busy.id},
                           code="deployment_in_progress")
        meta = _meta(row)
        meta["releases"] = int(meta.get("releases", 0)) + 1
        request_token = f"{row.id}-{meta['releases']}"
        meta["requestToken"] = request_token
        if not _move(row, S.DEPLOYING, released_at=utcnow(), token_hash=ids.secret_hash(token),
                     asset_id=row.id, reason=None, wakeups=0, last_woken_at=None, meta=json.dumps(meta)):
            raise Conflict(f"deployment {row.id!r} is {row.status}, it cannot be released "
                           f"({'a rollback goes to an inactive deployment' if kind == 'rollback' else 'only an uploading deployment can'})",
                           {"status": row.status}, code="deployment_not_releasable")
        return request_token

    request_token = db.unit_of_work(tx)
    request = _stack_request(row, settings, bucket=store.bucket, key=f"service_bundle/{row.id}", token=token,
                             request_token=request_token)
    events.record(row.cluster_id, E.INITIATED, deployment_id=row.id, service=row.service, kind=kind,
                  previousStatus=source, stackName=row.stack_name, bundleSha256=bundle.get("sha256"))
    try:
        result = cloudformation.create_or_update(settings, request)
    except Exception as exc:
        reason = f"the stack {row.stack_name} could not be created or updated: {_aws_error(exc)}"
        db.unit_of_work(lambda: _move(_reload(row), S.FAILED, reason=reason[:1024], token_hash=None))
        events.record(row.cluster_id, E.RESULTED, deployment_id=row.id, service=row.service, status=S.FAILED,
                      reason=reason)
        raise UpstreamFailed(reason, {"deploymentId": row.id}) from exc

    def record_stack():
        current = _reload(row)
        meta = _meta(current)
        meta.update(stackId=result["stackId"], operation=result["operation"])
        Deployment.update(meta=json.dumps(meta)).where(Deployment.id == row.id).execute()

    db.unit_of_work(record_stack)
    # The deployment as released (deploying), even when the stack's events came back inside the
    # call (moto's do): GET shows its fate.
    return db.unit_of_work(lambda: _answer(row), transaction=False)


def _reload(row: Deployment) -> Deployment:
    return Deployment.get_by_id(row.id)


def _aws_error(exc: Exception) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    if error:
        return f"{error.get('Code')}: {error.get('Message')}"
    return type(exc).__name__


def _confirm_bundle(row: Deployment, store) -> dict:
    bundle = assets.confirm(row.cluster_id, row.id, store=store)
    if row.status == S.UPLOADING:
        events.record(row.cluster_id, E.UPLOADED, deployment_id=row.id, service=row.service,
                      size=bundle.get("size"), sha256=bundle.get("sha256"))
    return bundle


def release(cluster_id: str, service: str, deployment_id: str, *, settings: Settings, store) -> dict:
    require_cloud(settings)
    row = db.unit_of_work(lambda: (clusters.get_cluster(cluster_id), _get(cluster_id, service, deployment_id))[1],
                          transaction=False)
    if row.status != S.UPLOADING:
        raise Conflict(f"deployment {deployment_id!r} is {row.status}: only an uploading deployment can be released "
                       "(POST .../rollback releases an inactive one again)", {"status": row.status},
                       code="deployment_not_releasable")
    if row.expires_at is not None and row.expires_at < utcnow():
        raise Conflict(f"deployment {deployment_id!r} expired at {clusters.iso(row.expires_at)}: create a new one",
                       {"expiresAt": clusters.iso(row.expires_at)}, code="deployment_expired")
    _require_public_url(settings)
    bundle = _confirm_bundle(row, store)
    return _release(row, settings, store, bundle=bundle, kind="release")


def rollback(cluster_id: str, service: str, deployment_id: str, *, settings: Settings, store) -> dict:
    """Release an earlier (inactive) deployment again; the active one stays active until the stack
    update succeeds."""
    require_cloud(settings)
    row = db.unit_of_work(lambda: (clusters.get_cluster(cluster_id), _get(cluster_id, service, deployment_id))[1],
                          transaction=False)
    if row.status != S.INACTIVE:
        raise Conflict(f"deployment {deployment_id!r} is {row.status}: a rollback goes back to an inactive "
                       "deployment (one that was active before)", {"status": row.status},
                       code="deployment_not_inactive")
    _require_public_url(settings)
    bundle = _confirm_bundle(row, store)  # its bundle must still be there (a delete removes it)
    return _release(row, settings, store, bundle=bundle, kind="rollback")


# --- stack events (SNS) ---------------------------------------------------------------------------

def on_stack_event(fields: dict[str, str], outcome: str | None) -> dict:
    """Apply one CloudFormation notification (cloud/sns.py parsed it, `outcome` from stack_outcome);
    what it did: {"deploymentId", "result"} with result activated, failed, in progress or ignored."""
    if outcome is None:
        return {"deploymentId": None, "result": "ignored"}
    stack = fields.get("StackName", "")
    token = fields.get("ClientRequestToken", "")

    def tx():
        candidates = list(Deployment.select().where((Deployment.stack_name == stack)
                                                     & (Deployment.status == S.DEPLOYING))
                          .order_by(Deployment.released_at.desc(), Deployment.id.desc()).limit(10))
        if token and token != "None":
            row = next((r for r in candidates if _meta(r).get("requestToken") == token), None)
        else:  # moto: no token; at most one deployment of a service is deploying
            row = candidates[0] if candidates else None
        if row is None or outcome == "in progress":
            return row, None, []
        status = fields.get("ResourceStatus", "")
        meta = _meta(row)
        meta["lastStackStatus"] = status
        now = utcnow()
        if outcome == "succeeded":
            before = list(Deployment.select().where((Deployment.cluster_id == row.cluster_id)
                                                    & (Deployment.service == row.service)
                                                    & (Deployment.status == S.ACTIVE) & (Deployment.id != row.id)))
            if not _move(row, S.ACTIVE, activated_at=now, meta=json.dumps(meta), wakeups=0):
                return row, None, []
            for old in before:
                _move(old, S.INACTIVE)
            return row, S.ACTIVE, before
        reason = fields.get("ResourceStatusReason") or ""
        reason = f"the stack ended {status}" + (f": {reason}" if reason and reason != "None" else "")
        if not _move(row, S.FAILED, reason=reason[:1024], meta=json.dumps(meta), token_hash=None):
            return row, None, []
        return row, S.FAILED, []

    row, result, inactivated = db.unit_of_work(tx)
    if row is None:
        return {"deploymentId": None, "result": "ignored"}
    if result is None:
        return {"deploymentId": row.id, "result": "in progress" if outcome == "in progress" else "ignored"}
    forget_active(row.cluster_id, row.service)
    for old in inactivated:
        events.record(old.cluster_id, E.INACTIVATED, deployment_id=old.id, service=old.service, replacedBy=row.id)
    events.record(row.cluster_id, E.RESULTED, deployment_id=row.id, service=row.service, status=result,
                  stackStatus=fields.get("ResourceStatus"), reason=row.reason)
    return {"deploymentId": row.id, "result": "activated" if result == S.ACTIVE else "failed"}


# --- logs -----------------------------------------------------------------------------------------

def _epoch_ms(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def read_logs(cluster_id: str, service: str, deployment_id: str, *, settings: Settings, start: int | None,
              end: int | None, pattern: str | None, next_token: str | None, limit: int) -> dict:
    """The function's log lines within the deployment's window (from its release until it stopped
    being active) and the caller's start/end: the log group is the service's, so the window is
    what tells one deployment's lines from another's."""
    require_cloud(settings)
    row = db.unit_of_work(lambda: (clusters.get_cluster(cluster_id), _get(cluster_id, service, deployment_id))[1],
                          transaction=False)
    now_ms = int(time.time() * 1000)
    window_start = _epoch_ms(row.released_at or row.created_at)
    window_end = now_ms if row.status in (S.ACTIVE, S.DEPLOYING) else _epoch_ms(row.updated_at)
    end_ms = min(end if end is not None else now_ms, window_end)
    start_ms = max(start if start is not None else end_ms - DEFAULT_LOG_WINDOW_MS, window_start)
    if start is not None and end is not None and start >= end:
        raise BadRequest("start must be before end (both epoch milliseconds)", {"field": "start"},
                         code="validation_failed")
    if start_ms >= end_ms:
        return {"events": [], "next": None}
    try:
        page = cloud_logs.read(settings, row.function_name, start_ms=start_ms, end_ms=end_ms, pattern=pattern,
                               next_token=next_token, limit=limit)
    except Exception as exc:
        raise UpstreamFailed(f"reading the logs of {row.function_name} failed: {_aws_error(exc)}") from exc
    return {"events": page.events, "next": page.next}


# --- delete ---------------------------------------------------------------------------------------

def delete_service(cluster_id: str, service: str, *, settings: Settings, store) -> dict:
    """Remove the service's stack (hence its function) and every bundle; its deployments stay listed,
    active and inactive ones as inactive, the others failed, and no token of theirs works any more."""
    require_cloud(settings)

    def tx():
        clusters.get_cluster(cluster_id)
        rows = list(Deployment.select().where((Deployment.cluster_id == cluster_id) & (Deployment.service == service))
                    .order_by(Deployment.created_at.desc()))
        if not rows:
            raise NotFound(f"service {service!r} of cluster {cluster_id!r} has no deployments",
                           {"service": service}, code="deployment_not_found")
        now = utcnow()
        for row in rows:
            if row.status == S.ACTIVE:
                _move(row, S.INACTIVE, token_hash=None)
            elif row.status in (S.UPLOADING, S.DEPLOYING):
                _move(row, S.FAILED, reason="the service's deployments were deleted", token_hash=None)
        Deployment.update(token_hash=None, updated_at=now).where(
            (Deployment.cluster_id == cluster_id) & (Deployment.service == service)
            & Deployment.token_hash.is_null(False)).execute()
        return rows

    rows = db.unit_of_work(tx)
    forget_active(cluster_id, service)
    stack_name = rows[0].stack_name
    try:
        cloudformation.delete(settings, stack_name)
    except Exception as exc:
        raise UpstreamFailed(f"deleting the stack {stack_name} failed: {_aws_error(exc)}; the deployments are "
                             "already inactive, DELETE again to retry", {"stackName": stack_name}) from exc
    removed = []
    for row in rows:
        try:
            assets.delete(cluster_id, row.id, store=store)
        except NotFound:
            pass
        removed.append(row.id)
    events.record(cluster_id, E.DELETED, service=service, stackName=stack_name, deployments=len(removed))
    return {"deleted": removed, "stackName": stack_name}


def delete_stacks_of_deleted_cluster(cluster_id: str, settings: Settings) -> bool:
    """A deleted cluster's stacks (hence functions), each once: False when one could not be deleted
    (the next purge tries again; its deployment rows wait). Without cloud settings no stack can be
    reached: the rows then go, and the log says which stacks may be left."""
    names = db.unit_of_work(lambda: [r.stack_name for r in Deployment.select(Deployment.stack_name).distinct()
                                     .where((Deployment.cluster_id == cluster_id)
                                            & Deployment.released_at.is_null(False))],
                            transaction=False, idempotent=True)
    if not names:
        return True
    try:
        require_cloud(settings)
    except NotImplementedFeature:
        log.warning("deleted cluster %s had stacks %s, which cannot be deleted without the cloud settings: "
                    "delete them by hand", cluster_id, ", ".join(names))
        return True
    for name in names:
        try:
            cloudformation.delete(settings, name)
        except Exception as exc:  # botocore raises many types; each means: try again later
            log.warning("deleting the stack %s of deleted cluster %s failed (retried later): %s", name, cluster_id,
                        _aws_error(exc))
            return False
    return True
