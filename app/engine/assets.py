"""Assets: the objects a deployment or a client library uploads, tracked from URL to checked object.

A caller asks for an upload URL for a target it owns (a deployment still `uploading`, a client
library still `reserved`); the row (id = the target's id, key `<kind>/<id>`) is made then. Asking
again before the upload was checked hands out a fresh URL for the same key, so a failed upload can
be retried. `confirm` reads the object back from the store and records its size and digests: only
a confirmed asset counts, whatever the client said. The store itself is app/cloud/assets.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import db
from ..cloud.assets import AssetStore, StoreError, TooBig, integrity
from ..errors import Conflict, NotFound, TooLarge, UpstreamFailed, ValidationFailed
from ..models import Asset, ClientLibrary, Deployment, utcnow
from .clusters import iso
from .states import AssetStatus, ClientLibraryStatus, DeploymentStatus

PENDING, UPLOADED = AssetStatus.PENDING, AssetStatus.UPLOADED
UPLOAD_URL_SECONDS = 3600


@dataclass(frozen=True)
class Kind:
    max_bytes: int
    content_types: dict[str, str]  # by the target's flavour ("" when it has one only)


KINDS = {
    # Lambda takes at most 250 MB unzipped; a zip of that is smaller still.
    "service_bundle": Kind(250 * 1024 * 1024, {"": "application/zip"}),
    # A client library is a few kilobytes of generated code.
    "client_library": Kind(20 * 1024 * 1024, {"typescript": "application/gzip", "python": "application/zip"}),
}


def key_of(kind: str, target_id: str) -> str:
    return f"{kind}/{target_id}"


def _content_type(cluster_id: str, kind: str, target_id: str) -> str:
    """The target's content type; NotFound or Conflict unless the target takes an upload now."""
    if kind == "service_bundle":
        row = (Deployment.select(Deployment.status).where(Deployment.cluster_id == cluster_id,
                                                          Deployment.id == target_id).first())
        if row is None:
            raise NotFound(f"cluster {cluster_id} has no deployment {target_id}", {"target": target_id},
                           code="deployment_not_found")
        if row.status != DeploymentStatus.UPLOADING:
            raise Conflict(f"deployment {target_id} is {row.status}: only a deployment still uploading takes a "
                           "bundle (create a new deployment)", {"status": row.status}, code="deployment_not_uploading")
        return KINDS[kind].content_types[""]
    row = (ClientLibrary.select(ClientLibrary.status, ClientLibrary.language)
           .where(ClientLibrary.cluster_id == cluster_id, ClientLibrary.id == target_id).first())
    if row is None:
        raise NotFound(f"cluster {cluster_id} has no client library {target_id}", {"target": target_id},
                       code="client_library_not_found")
    if row.status != ClientLibraryStatus.RESERVED:
        raise Conflict(f"client library {target_id} is {row.status}: publish a new version instead",
                       {"status": row.status}, code="client_library_not_reserved")
    return KINDS[kind].content_types[row.language]


def request_upload(cluster_id: str, kind: str, target_id: str, *, store: AssetStore, base_url: str) -> dict:
    if kind not in KINDS:
        raise ValidationFailed(f"type must be one of {', '.join(KINDS)}", {"field": "type"})
    key = key_of(kind, target_id)

    def tx():
        content_type = _content_type(cluster_id, kind, target_id)
        row = Asset.get_or_none(Asset.cluster_id == cluster_id, Asset.kind == kind, Asset.target_id == target_id)
        if row is not None and row.status == UPLOADED:
            raise Conflict(f"the {kind} of {target_id} is uploaded and checked already", {"target": target_id},
                           code="asset_uploaded")
        if row is None:
            Asset.insert(id=target_id, cluster_id=cluster_id, kind=kind, target_id=target_id, key=key,
                         content_type=content_type, status=PENDING, created_at=utcnow()).on_conflict_ignore().execute()
        return content_type

    content_type = db.unit_of_work(tx)
    limit = KINDS[kind].max_bytes
    try:
        upload = store.presign_put(key, content_type, max_bytes=limit, base_url=base_url,
                                   expires_seconds=UPLOAD_URL_SECONDS)
    except StoreError as exc:
        raise UpstreamFailed(str(exc)) from exc
    return {"presignedUrl": upload.url, "assetId": target_id, "key": key, "method": "PUT", "headers": upload.headers,
            "contentType": content_type, "maxBytes": limit, "expiresAt": iso(upload.expires_at)}


def _get(cluster_id: str, asset_id: str) -> Asset:
    row = Asset.get_or_none(Asset.cluster_id == cluster_id, Asset.id == asset_id)
    if row is None:
        raise NotFound(f"cluster {cluster_id} has no asset {asset_id}: ask for an upload URL first "
                       "(POST /clusters/:id/assets)", {"asset": asset_id}, code="asset_not_found")
    return row


def _describe(row: Asset) -> dict:
    return {"id": row.id, "kind": row.kind, "targetId": row.target_id, "key": row.key, "contentType": row.content_type,
            "status": row.status, "size": row.size, "sha256": row.sha256, "sha1": row.sha1, "sha512": row.sha512,
            "integrity": integrity(row.sha512) if row.sha512 else None, "createdAt": iso(row.created_at), "uploadedAt": iso(row.uploaded_at)}


def confirm(cluster_id: str, asset_id: str, *, store: AssetStore) -> dict:
    """Check the uploaded object and record its size and digests (once; later calls read them back)."""
    row = db.unit_of_work(lambda: _get(cluster_id, asset_id))
    if row.status == UPLOADED:
        return _describe(row)
    limit = KINDS[row.kind].max_bytes
    try:
        found = store.inspect(row.key, max_bytes=limit)
    except TooBig as exc:
        store.delete(row.key)
        raise TooLarge(f"{exc}: it was deleted; upload a smaller one", {"asset": asset_id},
                       code="asset_too_large") from exc
    except StoreError as exc:
        raise UpstreamFailed(str(exc)) from exc
    if found is None:
        raise Conflict(f"nothing was uploaded for {asset_id} yet: PUT the file to the upload URL first "
                       "(POST /clusters/:id/assets gives a fresh one)", {"asset": asset_id}, code="asset_not_uploaded")

    def tx():
        (Asset.update(status=UPLOADED, size=found.size, sha256=found.sha256, sha1=found.sha1, sha512=found.sha512,
                      uploaded_at=utcnow())
         .where(Asset.cluster_id == cluster_id, Asset.id == asset_id, Asset.status == PENDING).execute())
        return _get(cluster_id, asset_id)

    return _describe(db.unit_of_work(tx))


def delete(cluster_id: str, asset_id: str, *, store: AssetStore) -> bool:
    """Remove the object and its row; False when there was none."""
    row = db.unit_of_work(lambda: Asset.get_or_none(Asset.cluster_id == cluster_id, Asset.id == asset_id))
    if row is None:
        return False
    try:
        store.delete(row.key)
    except StoreError as exc:
        raise UpstreamFailed(str(exc)) from exc
    db.unit_of_work(lambda: Asset.delete().where(Asset.cluster_id == cluster_id, Asset.id == asset_id).execute())
    return True

