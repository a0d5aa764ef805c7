"""Versions of a cluster's typed client libraries: reserve a number, publish it, list what is published.

A version is unique per (cluster, language): the unique index decides, not a read. Reserving takes
the increment of the highest version that is published or still reserved and unexpired, inserts it,
and on the unique conflict (someone else took it a moment ago) reads again and takes the next, so
concurrent publishes get distinct versions on PostgreSQL and SQLite alike. A reservation that is
never published expires (RESERVATION_SECONDS) and frees its number: the next reservation of that
cluster and language deletes up to EXPIRED_BATCH expired ones, with their uploaded objects.

Publishing checks the uploaded object through engine/assets.confirm (it must exist; its size and
digests are recorded) and only then does the version count. Versions are only ever X.Y.Z minted
here, kept as three integer columns, so semver order is plain integer order (no library needed).
Names come from registry/names.py, never from here.
"""
from __future__ import annotations

import datetime as dt
import logging

import peewee

from .. import db
from ..cloud.assets import integrity
from ..errors import Conflict, NotFound, Unavailable, ValidationFailed
from ..models import Asset, ClientLibrary, Cluster, utcnow
from ..observability.events import events
from ..registry import names
from . import assets, clusters, ids
from .clusters import iso
from .states import ClientLibraryStatus

log = logging.getLogger(__name__)

INCREMENTS = ("patch", "minor", "major")
LANGUAGES = names.LANGUAGES
RESERVED, PUBLISHED = ClientLibraryStatus.RESERVED, ClientLibraryStatus.PUBLISHED
RESERVATION_SECONDS = 3600
MAX_LIVE_RESERVATIONS = 100  # per cluster and language: a runaway script cannot fill the table
EXPIRED_BATCH = 20  # expired reservations deleted by one reservation (bounded work per request)
MAX_PART = 999_999_999  # of each of major, minor, patch (fits the INTEGER columns, and names.py's pattern)
MAX_LISTED = 1000  # published versions listed (and in a packument), highest first
_INSERT_ATTEMPTS = 64  # a conflict means another reservation won that number; 20 at once need at most 20


class EventType:
    """What the activity log records about client libraries."""

    RESERVED = "clientLibraryReserved"
    PUBLISHED = "clientLibraryPublished"
    EXPIRED = "clientLibraryReservationsExpired"  # meta: the versions freed


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid request: {field} {message}", {"fields": [{"field": field, "message": message}]})


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise _invalid("language", f"must be one of {', '.join(LANGUAGES)}")
    return language


def bump(base: tuple[int, int, int] | None, increment: str) -> tuple[int, int, int]:
    """The increment of `base` (None: nothing yet, i.e. 0.0.0), as the original does."""
    major, minor, patch = base or (0, 0, 0)
    if increment == "major":
        return major + 1, 0, 0
    if increment == "minor":
        return major, minor + 1, 0
    if increment == "patch":
        return major, minor, patch + 1
    raise _invalid("increment", f"must be one of {', '.join(INCREMENTS)}")


def _version(parts: tuple[int, int, int]) -> str:
    return ".".join(map(str, parts))


def _public(row: ClientLibrary, asset: Asset | None = None) -> dict:
    out = {"id": row.id, "version": row.version, "language": row.language,
           **names.names(row.language, row.cluster_id, row.version), "status": row.status,
           "createdAt": iso(row.created_at)}
    if row.status == RESERVED:
        out["expiresAt"] = iso(row.expires_at)
    else:
        out.update(size=asset.size if asset else None, sha256=asset.sha256 if asset else None,
                   publishedAt=iso(row.published_at))
    return out


def _highest_live(cluster_id: str, language: str, now: dt.datetime) -> tuple[int, int, int] | None:
    row = (ClientLibrary.select(ClientLibrary.major, ClientLibrary.minor, ClientLibrary.patch)
           .where((ClientLibrary.cluster_id == cluster_id) & (ClientLibrary.language == language)
                  & ((ClientLibrary.status == PUBLISHED) | (ClientLibrary.expires_at > now)))
           .order_by(ClientLibrary.major.desc(), ClientLibrary.minor.desc(), ClientLibrary.patch.desc()).first())
    return (row.major, row.minor, row.patch) if row else None


def _expire(cluster_id: str, language: str, now: dt.datetime) -> list[ClientLibrary]:
    """Delete up to EXPIRED_BATCH expired reservations (in the caller's transaction); the rows deleted."""
    stale = list(ClientLibrary.select(ClientLibrary.id, ClientLibrary.version)
                 .where((ClientLibrary.cluster_id == cluster_id) & (ClientLibrary.language == language)
                        & (ClientLibrary.status == RESERVED) & (ClientLibrary.expires_at <= now))
                 .limit(EXPIRED_BATCH))
    if stale:
        (ClientLibrary.delete()
         .where(ClientLibrary.id.in_([r.id for r in stale]) & (ClientLibrary.status == RESERVED)
                & (ClientLibrary.expires_at <= now)).execute())
    return stale


def reserve(cluster_id: str, increment: str = "patch", language: str = "typescript", *, store=None,
            ttl_seconds: float = RESERVATION_SECONDS) -> dict:
    """Reserve the next version (201's body). `store`: where expired reservations' objects are deleted."""
    check_language(language)
    bump(None, increment)  # checks it before anything is read

    def tx() -> tuple[ClientLibrary, list[ClientLibrary]]:
        clusters.get_cluster(cluster_id)
        if not names.packageable(cluster_id):
            raise Conflict(f"cluster id {cluster_id!r} cannot name a package (it needs lower-case letters and digits "
                           "in hyphen-separated runs, as created clusters have)", {"clusterId": cluster_id},
                           code="cluster_not_packageable")
        now = utcnow()
        expired = _expire(cluster_id, language, now)
        live = (ClientLibrary.select().where((ClientLibrary.cluster_id == cluster_id)
                                             & (ClientLibrary.language == language)
                                             & (ClientLibrary.status == RESERVED) & (ClientLibrary.expires_at > now))
                .count())
        if live >= MAX_LIVE_RESERVATIONS:
            raise Conflict(f"cluster {cluster_id!r} already has {live} unpublished {language} reservations (at most "
                           f"{MAX_LIVE_RESERVATIONS}); publish them or wait until they expire",
                           {"clusterId": cluster_id, "language": language, "limit": MAX_LIVE_RESERVATIONS},
                           code="too_many_reservations")
        parts = bump(_highest_live(cluster_id, language, now), increment)
        if max(parts) > MAX_PART:
            raise Conflict(f"the next {language} version would pass {MAX_PART} in one of its numbers",
                           {"clusterId": cluster_id}, code="version_exhausted")
        row = ClientLibrary(id=ids.job_id(), cluster_id=cluster_id, language=language, version=_version(parts),
                            major=parts[0], minor=parts[1], patch=parts[2], status=RESERVED, created_at=now,
                            expires_at=now + dt.timedelta(seconds=ttl_seconds))
        row.save(force_insert=True)
        return row, expired

    for _ in range(_INSERT_ATTEMPTS):
        try:
            row, expired = db.unit_of_work(tx)
            break
        except peewee.IntegrityError:
            continue  # that number was taken between our read and insert: read again, take the next
    else:
        raise Unavailable("too many reservations of this cluster's versions at once; retry shortly",
                          {"clusterId": cluster_id}, code="reservations_contended")
    if expired:
        events.record(cluster_id, EventType.EXPIRED, language=language, versions=[r.version for r in expired])
        for stale in expired:
            _delete_object(cluster_id, stale.id, store)
    events.record(cluster_id, EventType.RESERVED, language=language, version=row.version, libraryId=row.id)
    return _public(row)


def _delete_object(cluster_id: str, asset_id: str, store) -> None:
    if store is None:
        return
    try:
        assets.delete(cluster_id, asset_id, store=store)
    except NotFound:
        pass  # never uploaded
    except Exception:  # noqa: BLE001 (the reservation is gone either way; an orphan object is only bytes)
        log.warning("could not delete the object of expired client library %s", asset_id, exc_info=True)


def _row(cluster_id: str, library_id: str) -> ClientLibrary:
    row = ClientLibrary.get_or_none((ClientLibrary.id == library_id) & (ClientLibrary.cluster_id == cluster_id))
    if row is None:
        raise NotFound(f"client library {library_id!r} does not exist in cluster {cluster_id!r}",
                       {"clusterId": cluster_id, "libraryId": library_id}, code="client_library_not_found")
    return row


def _asset(row: ClientLibrary) -> Asset | None:
    if not row.asset_id:
        return None
    return Asset.get_or_none((Asset.id == row.asset_id) & (Asset.cluster_id == row.cluster_id))


def get(cluster_id: str, library_id: str) -> dict:
    def tx() -> dict:
        clusters.get_cluster(cluster_id)
        row = _row(cluster_id, library_id)
        return _public(row, _asset(row))

    return db.unit_of_work(tx, idempotent=True)


def publish(cluster_id: str, library_id: str, *, store) -> dict:
    """Check the uploaded object, then make the version count (idempotent: a published one answers again)."""
    def read() -> ClientLibrary:
        clusters.get_cluster(cluster_id)
        return _row(cluster_id, library_id)

    current = db.unit_of_work(read, idempotent=True)
    if current.status == PUBLISHED:
        return get(cluster_id, library_id)
    try:
        assets.confirm(cluster_id, library_id, store=store)  # Conflict asset_not_uploaded when there is no object
    except NotFound as exc:  # no upload URL was even asked for: the library exists, its file does not
        raise Conflict(f"version {current.version} has no upload yet: POST /clusters/{cluster_id}/assets "
                       f"{{\"type\": \"client_library\", \"target\": \"{library_id}\"}}, PUT the file to the URL, then "
                       "publish", {"libraryId": library_id}, code="asset_not_uploaded") from exc

    def tx() -> int:
        return (ClientLibrary.update(status=PUBLISHED, published_at=utcnow(), expires_at=None, asset_id=library_id)
                .where((ClientLibrary.id == library_id) & (ClientLibrary.cluster_id == cluster_id)
                       & (ClientLibrary.status == RESERVED)).execute())

    if not db.unit_of_work(tx):
        now = db.unit_of_work(lambda: ClientLibrary.get_or_none(ClientLibrary.id == library_id), idempotent=True)
        if now is None:
            raise Conflict(f"the reservation of version {current.version} expired and was freed before it was "
                           "published; reserve a new version and upload again",
                           {"libraryId": library_id, "version": current.version}, code="reservation_expired")
    published = get(cluster_id, library_id)
    events.record(cluster_id, EventType.PUBLISHED, language=published["language"], version=published["version"],
                  libraryId=library_id, size=published["size"], sha256=published["sha256"])
    return published


# --- reading what is published (the management API and the registry routes) ---------------------

def _published_query(cluster_id: str, language: str | None):
    query = (ClientLibrary.select(ClientLibrary, Asset)
             .join(Asset, on=((Asset.id == ClientLibrary.asset_id) & (Asset.cluster_id == ClientLibrary.cluster_id)),
                   attr="asset")
             .where((ClientLibrary.cluster_id == cluster_id) & (ClientLibrary.status == PUBLISHED)))
    if language is not None:
        query = query.where(ClientLibrary.language == language)
    return query


def published(cluster_id: str, language: str | None = None) -> list[dict]:
    """Published versions, highest semver first (per language: typescript's, then python's), with
    their digests and store key (`key`, `contentType`, `sha1`, `sha512`, `integrity` for the registry routes)."""

    def tx() -> list[dict]:
        clusters.get_cluster(cluster_id)
        rows = (_published_query(cluster_id, language)
                .order_by(ClientLibrary.language.desc(), ClientLibrary.major.desc(), ClientLibrary.minor.desc(),
                          ClientLibrary.patch.desc()).limit(MAX_LISTED))
        return [_file(row, row.asset) for row in rows]

    return db.unit_of_work(tx, idempotent=True)


def _file(row: ClientLibrary, asset: Asset) -> dict:
    return {**_public(row, asset), "sha1": asset.sha1, "sha512": asset.sha512, "integrity": integrity(asset.sha512),
            "key": asset.key, "contentType": asset.content_type}


def published_file(cluster_id: str, language: str, version: str) -> dict:
    """One published version's file (as `published` lists it); NotFound when there is none."""

    def tx() -> dict:
        clusters.get_cluster(cluster_id)
        row = _published_query(cluster_id, language).where(ClientLibrary.version == version).first()
        if row is None:
            raise NotFound(f"cluster {cluster_id!r} has no published {language} client version {version}",
                           {"clusterId": cluster_id, "language": language, "version": version},
                           code="client_library_version_not_found")
        return _file(row, row.asset)

    return db.unit_of_work(tx, idempotent=True)


def clusters_with_python(limit: int = MAX_LISTED) -> list[str]:
    """Live clusters with a published Python client (the simple index's root, for the management secret)."""
    query = (ClientLibrary.select(ClientLibrary.cluster_id).distinct()
             .join(Cluster, on=(Cluster.id == ClientLibrary.cluster_id))
             .where((ClientLibrary.language == "python") & (ClientLibrary.status == PUBLISHED)
                    & Cluster.deleted_at.is_null())
             .order_by(ClientLibrary.cluster_id).limit(limit))
    return db.unit_of_work(lambda: [r.cluster_id for r in query], transaction=False, idempotent=True)
