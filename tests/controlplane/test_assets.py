"""The asset store: upload URLs for a target, the local store's signed PUT, S3 on moto, and the
check that makes an upload count (engine/assets.confirm)."""
from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from app import db
from app.cloud import assets as store_module
from app.engine import assets
from app.models import Asset, ClientLibrary, Deployment, utcnow
from support import moto

from cp_helpers import Api

BUNDLE = b"PK\x03\x04" + bytes(range(256)) * 40  # any bytes: the store does not read zips


def _deployment(cluster_id: str, deployment_id: str = "dpl_test1", status: str = "uploading") -> str:
    now = utcnow()
    db.unit_of_work(lambda: Deployment.insert(
        id=deployment_id, cluster_id=cluster_id, service="svc", status=status, provider="lambda", runtime="python3.13",
        stack_name="differential-deployment-x", function_name="differential-deployment-x", created_at=now,
        updated_at=now, wakeups=0).execute())
    return deployment_id


def _library(cluster_id: str, library_id: str = "lib_test1", language: str = "typescript") -> str:
    db.unit_of_work(lambda: ClientLibrary.insert(
        id=library_id, cluster_id=cluster_id, language=language, version="0.0.1", major=0, minor=0, patch=1,
        status="reserved", created_at=utcnow()).execute())
    return library_id


@pytest.fixture
def api(app):
    return Api(app)


def _ask(api, cluster, kind, target):
    return api.client.post(f"/clusters/{cluster['id']}/assets", json={"type": kind, "target": target},
                           headers=api.mgmt)


def _put(api, url: str, data: bytes, content_type: str):
    parts = urlsplit(url)
    return api.client.put(f"{parts.path}?{parts.query}", data=data, headers={"Content-Type": content_type})


def test_a_bundle_uploads_to_the_local_store_and_counts_once_checked(app, api):
    cluster = api.new_cluster()
    target = _deployment(cluster["id"])
    r = _ask(api, cluster, "service_bundle", target)
    assert r.status_code == 201, r.json
    answer = r.json
    assert answer["headers"] == {"Content-Type": "application/zip"} and answer["method"] == "PUT"
    assert answer["key"] == f"service_bundle/{target}" and answer["assetId"] == target
    assert answer["presignedUrl"].startswith("http://localhost/assets/service_bundle/")
    store = app.extensions["differential"].assets
    with app.app_context():
        with pytest.raises(Exception) as early:
            assets.confirm(cluster["id"], target, store=store)
        assert getattr(early.value, "code", "") == "asset_not_uploaded"
    put = _put(api, answer["presignedUrl"], BUNDLE, "application/zip")
    assert put.status_code == 200, put.json
    assert put.json == {"key": answer["key"], "size": len(BUNDLE)}
    with app.app_context():
        checked = assets.confirm(cluster["id"], target, store=store)
    assert checked["status"] == "uploaded" and checked["size"] == len(BUNDLE)
    assert checked["sha256"] == hashlib.sha256(BUNDLE).hexdigest()
    assert checked["sha1"] == hashlib.sha1(BUNDLE).hexdigest()  # noqa: S324
    assert checked["integrity"] == store_module.integrity(hashlib.sha512(BUNDLE).hexdigest())
    assert b"".join(store.read(answer["key"])) == BUNDLE
    # Checked: a new URL for it is refused, and the row says so.
    again = _ask(api, cluster, "service_bundle", target)
    assert again.status_code == 409 and again.json["error"]["code"] == "asset_uploaded"


def test_a_failed_upload_can_be_retried_with_a_fresh_url(app, api):
    cluster = api.new_cluster()
    target = _library(cluster["id"], language="python")
    first = _ask(api, cluster, "client_library", target).json
    assert first["contentType"] == "application/zip"  # a wheel
    second = _ask(api, cluster, "client_library", target)
    assert second.status_code == 201 and second.json["expiresAt"] >= first["expiresAt"]
    assert _put(api, second.json["presignedUrl"], b"wheel", "application/zip").status_code == 200
    with app.app_context():
        assert db.unit_of_work(lambda: Asset.select().where(Asset.target_id == target).count()) == 1


def test_the_local_upload_route_refuses_what_its_signature_does_not_cover(app, api):
    cluster = api.new_cluster()
    target = _library(cluster["id"])
    url = _ask(api, cluster, "client_library", target).json["presignedUrl"]
    assert "application%2Fgzip" in url
    wrong_type = _put(api, url, b"x", "application/zip")
    assert wrong_type.status_code == 403 and "Content-Type: application/gzip" in wrong_type.json["error"]["message"]
    parts = urlsplit(url)
    args = {k: v[0] for k, v in parse_qs(parts.query).items()}
    tampered = {**args, "maxBytes": str(int(args["maxBytes"]) * 2)}
    r = api.client.put(f"{parts.path}?{urlencode(tampered)}", data=b"x", headers={"Content-Type": "application/gzip"})
    assert r.status_code == 403 and "signature" in r.json["error"]["message"]
    other_key = parts.path.replace(target, "lib_other")
    r = api.client.put(f"{other_key}?{parts.query}", data=b"x", headers={"Content-Type": "application/gzip"})
    assert r.status_code == 403
    local = app.extensions["differential"].assets
    expired = {**args, "expires": str(int(time.time()) - 1)}
    expired["signature"] = local.signature(f"client_library/{target}", "application/gzip", int(args["maxBytes"]),
                                           int(expired["expires"]))
    r = api.client.put(f"{parts.path}?{urlencode(expired)}", data=b"x", headers={"Content-Type": "application/gzip"})
    assert r.status_code == 403 and "expired" in r.json["error"]["message"]
    small = {**args, "maxBytes": "4"}
    small["signature"] = local.signature(f"client_library/{target}", "application/gzip", 4, int(args["expires"]))
    r = api.client.put(f"{parts.path}?{urlencode(small)}", data=b"12345", headers={"Content-Type": "application/gzip"})
    assert r.status_code == 413
    for bad in ("/assets/../secrets-key", "/assets/client_library/a/b", "/assets/x"):
        r = api.client.put(f"{bad}?{parts.query}", data=b"x", headers={"Content-Type": "application/gzip"})
        assert r.status_code in (400, 404), (bad, r.status_code)
    with pytest.raises(KeyError):
        list(local.read(f"client_library/{target}"))  # nothing refused was stored


def test_upload_urls_only_for_targets_of_the_cluster_that_take_one(app, api):
    cluster, other = api.new_cluster(), api.new_cluster()
    mine = _deployment(cluster["id"])
    assert _ask(api, other, "service_bundle", mine).status_code == 404
    assert _ask(api, cluster, "service_bundle", "dpl_missing").json["error"]["code"] == "deployment_not_found"
    assert _ask(api, cluster, "client_library", mine).json["error"]["code"] == "client_library_not_found"
    released = _deployment(cluster["id"], "dpl_released", status="deploying")
    r = _ask(api, cluster, "service_bundle", released)
    assert r.status_code == 409 and r.json["error"]["code"] == "deployment_not_uploading"
    for body in ({"type": "firmware", "target": mine}, {"type": "service_bundle"}, {"target": mine},
                 {"type": "service_bundle", "target": "x" * 65}, {"type": "service_bundle", "target": mine, "n": 1}):
        r = api.client.post(f"/clusters/{cluster['id']}/assets", json=body, headers=api.mgmt)
        assert r.status_code == 400, (body, r.json)
    r = api.client.post(f"/clusters/{cluster['id']}/assets", json={"type": "service_bundle", "target": mine},
                        headers={"Authorization": f"Basic {cluster['apiSecret']}"})
    assert r.status_code == 401


def test_an_object_over_its_kinds_limit_does_not_count_and_is_removed(app, api, monkeypatch):
    cluster = api.new_cluster()
    target = _library(cluster["id"])
    url = _ask(api, cluster, "client_library", target).json["presignedUrl"]
    assert _put(api, url, b"123456789", "application/gzip").status_code == 200
    monkeypatch.setitem(assets.KINDS, "client_library", assets.Kind(8, assets.KINDS["client_library"].content_types))
    store = app.extensions["differential"].assets
    with app.app_context():
        with pytest.raises(Exception) as too_big:
            assets.confirm(cluster["id"], target, store=store)
    assert getattr(too_big.value, "code", "") == "asset_too_large"
    with pytest.raises(KeyError):
        list(store.read(f"client_library/{target}"))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_s3_store_presigns_sigv4_for_the_content_type_and_checks_the_object(make_app, moto_clean):
    moto.client("s3").create_bucket(Bucket="assets-under-test")
    app = make_app(asset_upload_bucket="assets-under-test", aws_endpoint_url=moto_clean, aws_region=moto.REGION,
                   aws_access_key_id=moto.ACCESS_KEY_ID, aws_secret_access_key=moto.SECRET_ACCESS_KEY)
    api = Api(app)
    store = app.extensions["differential"].assets
    assert store.kind == "s3" and store.bucket == "assets-under-test"
    cluster = api.new_cluster()
    target = _deployment(cluster["id"])
    answer = _ask(api, cluster, "service_bundle", target).json
    query = parse_qs(urlsplit(answer["presignedUrl"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "content-type" in query["X-Amz-SignedHeaders"][0].split(";")
    r = httpx.put(answer["presignedUrl"], content=BUNDLE, headers=answer["headers"], timeout=10)
    assert r.status_code == 200, r.text
    with app.app_context():
        checked = assets.confirm(cluster["id"], target, store=store)
    assert checked["size"] == len(BUNDLE) and checked["sha256"] == hashlib.sha256(BUNDLE).hexdigest()
    head = moto.client("s3").head_object(Bucket="assets-under-test", Key=answer["key"])
    assert head["ContentLength"] == len(BUNDLE)
    with app.app_context():
        assert assets.delete(cluster["id"], target, store=store) is True
    with pytest.raises(KeyError):
        list(store.read(answer["key"]))
    # The local upload route is not this store's: it says where uploads go.
    r = api.client.put("/assets/service_bundle/x?expires=1", data=b"x", headers={"Content-Type": "application/zip"})
    assert r.status_code == 404 and "ASSET_UPLOAD_BUCKET" in r.json["error"]["message"]
