"""The npm and pip routes in-process on both backends: the packument (latest = highest semver,
tarball URL from the request's scheme and host, shasum and integrity), tarballs and wheels streamed
with their length and type, PEP 503 pages and PEP 691 JSON parsed, and who may read: a registry token
of that cluster or the management secret; a wrong, revoked or other cluster's token is 401."""
from __future__ import annotations

import base64
import hashlib
import json
from html.parser import HTMLParser

import pytest

from app.models import RegistryToken
from app import db

from registry_helpers import flask_steps, sha256

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@pytest.fixture
def world(api):
    """Two clusters, a registry token each: the first with typescript 0.0.1, 0.1.0, 1.0.0 and python
    0.0.1 published, the other with typescript 0.0.1 only."""
    steps = flask_steps(api.client, api.mgmt)
    cluster, other = api.new_cluster()["id"], api.new_cluster()["id"]
    published = {}
    for inc in ("patch", "minor", "major"):
        answer, data = steps.release(cluster, inc)
        published[answer["version"]] = data
    py, wheel = steps.release(cluster, "patch", "python")
    steps.release(other)
    tokens = {}
    for c in (cluster, other):
        tokens[c] = api.client.post(f"/clusters/{c}/registry-tokens", headers=api.mgmt,
                                    json={"name": "t"}).json["token"]
    return {"api": api, "cluster": cluster, "other": other, "published": published, "py": py, "wheel": wheel,
            "tokens": tokens}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_packument_has_every_version_latest_highest_and_absolute_https_tarballs(world):
    api, cluster = world["api"], world["cluster"]
    token = world["tokens"][cluster]
    r = api.client.get(f"/packages/npm/@differential.dev%2f{cluster}", headers={
        **bearer(token), "X-Forwarded-Proto": "https", "Host": "registry.example.test",
        "Accept": "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*",
        "npm-command": "install", "npm-session": "abc"})
    assert r.status_code == 200, r.json
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json
    name = f"@differential.dev/{cluster}"
    assert doc["name"] == name and doc["dist-tags"] == {"latest": "1.0.0"}
    assert set(doc["versions"]) == {"0.0.1", "0.1.0", "1.0.0"} and set(doc["time"]) >= {"0.0.1", "created", "modified"}
    for version, data in world["published"].items():
        entry = doc["versions"][version]
        assert (entry["name"], entry["version"], entry["main"], entry["types"]) == (name, version, "index.js",
                                                                                   "index.d.ts")
        assert entry["description"]
        dist = entry["dist"]
        assert dist["tarball"] == f"https://registry.example.test/packages/npm/{name}/-/{cluster}-{version}.tgz"
        assert dist["shasum"] == hashlib.sha1(data).hexdigest()
        assert dist["integrity"] == "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        # The tarball, at that URL's path, is those bytes.
        t = api.client.get(dist["tarball"].split("registry.example.test", 1)[1], headers=bearer(token))
        assert t.status_code == 200 and t.data == data
        assert t.headers["Content-Length"] == str(len(data)) and t.headers["Content-Type"] == "application/gzip"
    # Without a proxy's header the URL is the request's own scheme; the unencoded name answers too.
    plain = api.client.get(f"/packages/npm/@differential.dev/{cluster}", headers=bearer(token)).json
    assert plain["versions"]["1.0.0"]["dist"]["tarball"].startswith("http://localhost/packages/npm/")


def test_latest_is_the_highest_semver_not_the_last_published(api):
    steps = flask_steps(api.client, api.mgmt)
    cluster = api.new_cluster()["id"]
    lower = steps.reserve(cluster, increment="major")  # 1.0.0, published last
    higher = steps.release(cluster)[0]  # the patch of the reserved 1.0.0, published first
    assert (lower["version"], higher["version"]) == ("1.0.0", "1.0.1")
    steps.upload(cluster, lower, b"\x1f\x8b published later")
    steps.publish(cluster, lower["id"])
    doc = api.client.get(f"/packages/npm/@differential.dev/{cluster}", headers=api.mgmt).json
    assert doc["dist-tags"]["latest"] == "1.0.1"  # highest, although 1.0.0 was published after it


def test_who_may_read(world):
    api, cluster, other = world["api"], world["cluster"], world["other"]
    path = f"/packages/npm/@differential.dev/{cluster}"
    assert api.client.get(path, headers=api.mgmt).status_code == 200  # the management secret reads too
    for headers in ({}, bearer("drt_" + "0" * 64), bearer("wrong"), {"Authorization": "Basic"},
                    bearer(world["tokens"][other]), api.headers({"apiSecret": "sk_" + "1" * 64})):
        r = api.client.get(path, headers=headers)
        assert r.status_code == 401, (headers, r.json)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="differential"'
        assert r.is_json and r.json["error"]["code"] in ("missing_credential", "invalid_credential")
    tarball = f"{path}/-/{cluster}-1.0.0.tgz"
    assert api.client.get(tarball, headers=bearer(world["tokens"][other])).status_code == 401
    assert api.client.get(tarball, headers=bearer(world["tokens"][cluster])).status_code == 200
    # A revoked token stops at once.
    [row] = db.unit_of_work(lambda: list(RegistryToken.select().where(RegistryToken.cluster_id == cluster)),
                            transaction=False)
    assert row.last_used_at is not None  # recorded (at most once a minute)
    assert api.client.delete(f"/clusters/{cluster}/registry-tokens/{row.id}", headers=api.mgmt).status_code == 204
    assert api.client.get(tarball, headers=bearer(world["tokens"][cluster])).status_code == 401


def test_missing_versions_files_and_packages_answer_404(world):
    api, cluster = world["api"], world["cluster"]
    token = bearer(world["tokens"][cluster])
    base = f"/packages/npm/@differential.dev/{cluster}/-/"
    for name in (f"{cluster}-9.9.9.tgz", f"{cluster}-1.0.tgz", "other-1.0.0.tgz", f"{cluster}-01.0.0.tgz"):
        r = api.client.get(base + name, headers=token)
        assert r.status_code == 404 and r.json["error"]["code"] == "client_library_version_not_found", name
    fresh = api.new_cluster()["id"]
    r = api.client.get(f"/packages/npm/@differential.dev/{fresh}", headers=api.mgmt)
    assert r.status_code == 404 and r.json["error"]["code"] == "package_not_found"
    r = api.client.get("/packages/npm/@differential.dev/cluster-nope", headers=api.mgmt)
    assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found"
    assert api.client.get("/packages/npm/@someone-else/pkg", headers=api.mgmt).status_code == 404
    r = api.client.get(f"/packages/pypi/files/{cluster}/nope.whl", headers=token)
    assert r.status_code == 404
    r = api.client.get(f"/packages/npm/@differential.dev/{cluster}/-/a\x00b.tgz", headers=token)
    assert r.status_code == 400


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.meta = [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "meta":
            self.meta[attrs.get("name")] = attrs.get("content")


def parse(text):
    parser = Links()
    parser.feed(text)
    return parser


def test_the_simple_index_in_html_and_json(world):
    api, cluster = world["api"], world["cluster"]
    py, wheel = world["py"], world["wheel"]
    project = f"differential-client-{cluster}"
    creds = basic("anyone", world["tokens"][cluster])  # pip's URL credentials
    root = api.client.get("/packages/pypi/simple/", headers=creds)
    assert root.status_code == 200 and root.headers["Content-Type"].startswith("text/html")
    assert parse(root.text).links == [f"{project}/"]  # only what this token reads
    assert parse(root.text).meta["pypi:repository-version"].startswith("1.")
    everything = parse(api.client.get("/packages/pypi/simple/", headers=api.mgmt).text).links
    assert f"{project}/" in everything and f"differential-client-{world['other']}/" not in everything  # no python
    page = api.client.get(f"/packages/pypi/simple/{project}/", headers=creds)
    assert page.status_code == 200 and page.headers["Vary"] == "Accept"
    [href] = parse(page.text).links
    assert href == f"../../files/{cluster}/{py['fileName']}#sha256={sha256(wheel)}"
    f = api.client.get(f"/packages/pypi/files/{cluster}/{py['fileName']}", headers=creds)
    assert f.status_code == 200 and f.data == wheel and f.headers["Content-Type"] == "application/zip"
    assert f.headers["Content-Length"] == str(len(wheel))
    # PEP 691: what pip asks for first.
    j = api.client.get(f"/packages/pypi/simple/{project}/", headers={**creds, "Accept": PIP_ACCEPT})
    assert j.headers["Content-Type"] == JSON_ACCEPT
    doc = json.loads(j.data)
    assert doc["meta"]["api-version"].startswith("1.") and doc["name"] == project
    assert doc["files"] == [{"filename": py["fileName"], "url": f"../../files/{cluster}/{py['fileName']}",
                             "hashes": {"sha256": sha256(wheel)}, "size": len(wheel),
                             "upload-time": py["publishedAt"]}]
    rj = json.loads(api.client.get("/packages/pypi/simple/", headers={**bearer(world["tokens"][cluster]),
                                                                     "Accept": JSON_ACCEPT}).data)
    assert rj["projects"] == [{"name": project}]


def test_the_simple_index_redirects_names_and_refuses_strangers(world):
    api, cluster = world["api"], world["cluster"]
    creds = basic("__token__", world["tokens"][cluster])
    odd = f"Differential_Client.{cluster.upper()}"
    r = api.client.get(f"/packages/pypi/simple/{odd}/", headers=creds)
    assert r.status_code == 301 and r.headers["Location"].endswith(f"/differential-client-{cluster}/")
    r = api.client.get(f"/packages/pypi/simple/differential-client-{cluster}/", headers={})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="differential"'
    for headers in (basic("x", world["tokens"][world["other"]]), basic("x", "drt_nope"), basic("x", "")):
        r = api.client.get(f"/packages/pypi/simple/differential-client-{cluster}/", headers=headers)
        assert r.status_code == 401
    r = api.client.get(f"/packages/pypi/files/{cluster}/{world['py']['fileName']}",
                       headers=basic("x", world["tokens"][world["other"]]))
    assert r.status_code == 401
    r = api.client.get("/packages/pypi/simple/requests/", headers=creds)
    assert r.status_code == 404 and r.json["error"]["code"] == "project_not_found"
    r = api.client.get(f"/packages/pypi/simple/differential-client-{world['other']}/", headers=api.mgmt)
    assert r.status_code == 404  # that cluster has no python client
