"""Client-library versions and registry tokens over the management API, in-process on both backends.

Versions: patch/minor/major increments, unique per (cluster, language), 20 concurrent publishes get
20 distinct versions, an unpublished reservation holds its number until it expires and then frees
it, a version counts only once its upload is checked (the original's duplicates and burnt numbers).
Tokens: shown once, kept as a hash, listed, revoked, bounded. Bad input on every route."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading

import pytest

from app import db
from app.engine import client_libraries, registry_tokens
from app.models import Asset, ClientLibrary, RegistryToken

from registry_helpers import flask_steps, sha256, tgz

TOKEN = re.compile(r"^drt_[0-9a-f]{64}$")


@pytest.fixture
def steps(api):
    return flask_steps(api.client, api.mgmt)


def rows(model, cluster_id):
    return db.unit_of_work(lambda: list(model.select().where(model.cluster_id == cluster_id)), transaction=False)


def test_increments_give_the_next_semver_and_the_list_is_highest_first(api, steps):
    cluster = api.new_cluster()["id"]
    versions = [steps.release(cluster, inc)[0]["version"]
                for inc in ("patch", "minor", "patch", "major", "patch", "minor")]
    assert versions == ["0.0.1", "0.1.0", "0.1.1", "1.0.0", "1.0.1", "1.1.0"]
    listed = api.client.get(f"/clusters/{cluster}/client-libraries", headers=api.mgmt).json["libraries"]
    assert [v["version"] for v in listed] == ["1.1.0", "1.0.1", "1.0.0", "0.1.1", "0.1.0", "0.0.1"]
    first = listed[-1]
    assert first["packageName"] == f"@differential.dev/{cluster}" and first["fileName"] == f"{cluster}-0.0.1.tgz"
    assert first["status"] == "published" and first["publishedAt"] and first["language"] == "typescript"
    assert first["size"] == len(tgz("0.0.1")) and first["sha256"] == sha256(tgz("0.0.1"))
    # Python counts on its own, with the names the CLI must build (one home: registry/names.py).
    py, data = steps.release(cluster, "minor", "python")
    assert py["version"] == "0.1.0"
    module = "differential_client_" + cluster.replace("-", "_")
    assert (py["packageName"], py["distribution"], py["module"], py["fileName"]) == (
        f"differential-client-{cluster}", f"differential-client-{cluster}", module, f"{module}-0.1.0-py3-none-any.whl")
    assert py["sha256"] == sha256(data)
    only = api.client.get(f"/clusters/{cluster}/client-libraries?language=python", headers=api.mgmt).json
    assert [v["version"] for v in only["libraries"]] == ["0.1.0"]
    events = [e["type"] for e in api.activity({"id": cluster})]
    assert events.count("clientLibraryPublished") == 7 and events.count("clientLibraryReserved") == 7


def test_the_reservation_answer_and_the_default_body(api, steps):
    cluster = api.new_cluster()["id"]
    r = api.client.post(f"/clusters/{cluster}/client-libraries", headers=api.mgmt)  # no body: patch, typescript
    assert r.status_code == 201, r.json
    made = r.json
    assert made["version"] == "0.0.1" and made["language"] == "typescript" and made["status"] == "reserved"
    expires = dt.datetime.fromisoformat(made["expiresAt"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=59) < expires - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(hours=1)
    # Not published: not listed; GET of the id shows it reserved.
    assert api.client.get(f"/clusters/{cluster}/client-libraries", headers=api.mgmt).json == {"libraries": []}
    one = api.client.get(f"/clusters/{cluster}/client-libraries/{made['id']}", headers=api.mgmt)
    assert one.status_code == 200 and one.json["status"] == "reserved"


def test_a_version_counts_only_once_its_upload_is_checked(api, steps):
    cluster = api.new_cluster()["id"]
    library = steps.reserve(cluster)
    r = api.client.post(f"/clusters/{cluster}/client-libraries/{library['id']}/publish", headers=api.mgmt)
    assert r.status_code == 409 and r.json["error"]["code"] == "asset_not_uploaded", r.json
    assert api.client.get(f"/clusters/{cluster}/client-libraries", headers=api.mgmt).json == {"libraries": []}
    steps.upload(cluster, library, tgz("0.0.1"))
    published = steps.publish(cluster, library["id"])
    again = steps.publish(cluster, library["id"])  # idempotent
    assert published == again and published["status"] == "published"
    [asset] = rows(Asset, cluster)
    assert asset.size == len(tgz("0.0.1")) and asset.sha1 == hashlib.sha1(tgz("0.0.1")).hexdigest()


def test_an_unpublished_reservation_holds_its_number_until_it_expires(api, steps):
    cluster = api.new_cluster()["id"]
    steps.release(cluster)  # 0.0.1 published
    held = steps.reserve(cluster)  # 0.0.2, never uploaded
    assert held["version"] == "0.0.2"
    assert steps.reserve(cluster)["version"] == "0.0.3"  # a live reservation counts
    # Both reservations expire: the next one frees their numbers and takes 0.0.2 again.
    past = dt.datetime.utcnow() - dt.timedelta(seconds=1)
    db.unit_of_work(lambda: ClientLibrary.update(expires_at=past)
                    .where((ClientLibrary.cluster_id == cluster) & (ClientLibrary.status == "reserved")).execute())
    again = steps.reserve(cluster)
    assert again["version"] == "0.0.2" and again["id"] != held["id"]
    assert sorted(r.version for r in rows(ClientLibrary, cluster)) == ["0.0.1", "0.0.2"]
    # The freed reservation cannot be published any more.
    r = api.client.post(f"/clusters/{cluster}/client-libraries/{held['id']}/publish", headers=api.mgmt)
    assert r.status_code == 404 and r.json["error"]["code"] == "client_library_not_found"
    expired = [e for e in api.activity({"id": cluster}) if e["type"] == "clientLibraryReservationsExpired"]
    assert [sorted(e["meta"]["versions"]) for e in expired] == [["0.0.2", "0.0.3"]]


def test_twenty_concurrent_publishes_get_twenty_distinct_versions(app, api):
    cluster = api.new_cluster()["id"]
    answers, failures = [], []
    start = threading.Barrier(20)

    def publish_one():
        try:
            steps = flask_steps(app.test_client(), api.mgmt)
            start.wait(timeout=10)
            answers.append(steps.release(cluster)[0]["version"])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            failures.append(exc)

    threads = [threading.Thread(target=publish_one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert sorted(answers, key=lambda v: tuple(map(int, v.split(".")))) == [f"0.0.{n}" for n in range(1, 21)]
    listed = api.client.get(f"/clusters/{cluster}/client-libraries", headers=api.mgmt).json["libraries"]
    assert [v["version"] for v in listed] == [f"0.0.{n}" for n in range(20, 0, -1)]


def test_registry_tokens_are_shown_once_stored_as_hashes_listed_and_revoked(api):
    cluster = api.new_cluster()["id"]
    r = api.client.post(f"/clusters/{cluster}/registry-tokens", headers=api.mgmt, json={"name": "ci"})
    assert r.status_code == 201, r.json
    made = r.json
    assert TOKEN.match(made["token"]) and made["name"] == "ci" and made["createdAt"]
    [row] = rows(RegistryToken, cluster)
    assert row.token_hash == hashlib.sha256(made["token"].encode()).hexdigest()
    assert made["token"] not in repr(row.__data__)
    listed = api.client.get(f"/clusters/{cluster}/registry-tokens", headers=api.mgmt)
    assert listed.json == {"tokens": [{"id": made["id"], "name": "ci", "createdAt": made["createdAt"],
                                       "lastUsedAt": None}]}
    assert made["token"] not in listed.get_data(as_text=True)
    # Another cluster's path cannot list or revoke it.
    other = api.new_cluster()["id"]
    assert api.client.get(f"/clusters/{other}/registry-tokens", headers=api.mgmt).json == {"tokens": []}
    r = api.client.delete(f"/clusters/{other}/registry-tokens/{made['id']}", headers=api.mgmt)
    assert r.status_code == 404 and r.json["error"]["code"] == "registry_token_not_found"
    assert api.client.delete(f"/clusters/{cluster}/registry-tokens/{made['id']}", headers=api.mgmt).status_code == 204
    assert rows(RegistryToken, cluster) == []
    assert api.client.delete(f"/clusters/{cluster}/registry-tokens/{made['id']}", headers=api.mgmt).status_code == 404
    types = [e["type"] for e in api.activity({"id": cluster})]
    assert "registryTokenCreated" in types and "registryTokenRevoked" in types
    assert made["token"] not in repr(api.activity({"id": cluster}))


def test_tokens_and_reservations_are_bounded(api, steps, monkeypatch):
    cluster = api.new_cluster()["id"]
    monkeypatch.setattr(registry_tokens, "MAX_TOKENS", 2)
    monkeypatch.setattr(client_libraries, "MAX_LIVE_RESERVATIONS", 2)
    for name in ("a", "b"):
        assert api.client.post(f"/clusters/{cluster}/registry-tokens", headers=api.mgmt,
                               json={"name": name}).status_code == 201
    r = api.client.post(f"/clusters/{cluster}/registry-tokens", headers=api.mgmt, json={"name": "c"})
    assert r.status_code == 409 and r.json["error"]["code"] == "too_many_registry_tokens"
    assert "revoke" in r.json["error"]["message"]
    steps.reserve(cluster)
    steps.reserve(cluster)
    r = api.client.post(f"/clusters/{cluster}/client-libraries", headers=api.mgmt, json={})
    assert r.status_code == 409 and r.json["error"]["code"] == "too_many_reservations"
    steps.reserve(cluster, language="python")  # per language


BAD_BODIES = [
    ("client-libraries", {"increment": "huge"}, "increment"),
    ("client-libraries", {"increment": 1}, "increment"),
    ("client-libraries", {"language": "cobol"}, "language"),
    ("client-libraries", {"language": "python\x00"}, "language"),
    ("client-libraries", {"version": "9.9.9"}, "version"),
    ("registry-tokens", {}, "name"),
    ("registry-tokens", {"name": ""}, "name"),
    ("registry-tokens", {"name": "x" * 129}, "name"),
    ("registry-tokens", {"name": "ci\x00"}, "name"),
    ("registry-tokens", {"name": "a\nb"}, "name"),
    ("registry-tokens", {"name": "ci", "token": "drt_mine"}, "token"),
]


@pytest.mark.parametrize("tail,body,field", BAD_BODIES)
def test_bad_bodies_answer_400_naming_the_field_and_store_nothing(api, tail, body, field):
    cluster = api.new_cluster()["id"]
    r = api.client.post(f"/clusters/{cluster}/{tail}", headers=api.mgmt, json=body)
    assert r.status_code == 400, r.json
    assert field in r.json["error"]["message"], r.json
    assert rows(ClientLibrary, cluster) == [] and rows(RegistryToken, cluster) == []


def test_bad_queries_unknown_and_other_clusters_ids_and_credentials(api, steps):
    cluster = api.new_cluster()["id"]
    other = api.new_cluster()["id"]
    mine = steps.release(cluster)[0]
    r = api.client.get(f"/clusters/{cluster}/client-libraries?language=cobol", headers=api.mgmt)
    assert r.status_code == 400 and "language" in r.json["error"]["message"]
    r = api.client.get(f"/clusters/{cluster}/client-libraries?limit=3", headers=api.mgmt)
    assert r.status_code == 400 and "limit" in r.json["error"]["message"]
    for method, path in [("GET", f"/clusters/{other}/client-libraries/{mine['id']}"),
                         ("POST", f"/clusters/{other}/client-libraries/{mine['id']}/publish"),
                         ("GET", f"/clusters/{cluster}/client-libraries/nope"),
                         ("GET", f"/clusters/{cluster}/client-libraries/{'x' * 300}")]:
        r = api.client.open(path, method=method, headers=api.mgmt)
        assert r.status_code == 404, (path, r.json)
    for method, path in [("POST", "/clusters/cluster-nope/client-libraries"),
                         ("GET", "/clusters/cluster-nope/client-libraries"),
                         ("POST", "/clusters/cluster-nope/registry-tokens"),
                         ("GET", "/clusters/cluster-nope/registry-tokens"),
                         ("DELETE", "/clusters/cluster-nope/registry-tokens/x")]:
        r = api.client.open(path, method=method, headers=api.mgmt,
                            json={"name": "x"} if path.endswith("registry-tokens") else None)
        assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found", (path, r.json)
    r = api.client.get(f"/clusters/{cluster}/client-libraries/a\x00b", headers=api.mgmt)
    assert r.status_code == 400
    # The cluster's API secret (or a registry token) is no management credential.
    token = api.client.post(f"/clusters/{cluster}/registry-tokens", headers=api.mgmt, json={"name": "t"}).json["token"]
    for secret in (api.headers({"apiSecret": token})["Authorization"], f"Bearer {token}"):
        r = api.client.post(f"/clusters/{cluster}/client-libraries", headers={"Authorization": secret})
        assert r.status_code == 401


def test_deleting_a_cluster_removes_its_libraries_and_tokens(api, steps):
    cluster = api.new_cluster()["id"]
    steps.release(cluster)
    steps.reserve(cluster, language="python")
    token = api.client.post(f"/clusters/{cluster}/registry-tokens", headers=api.mgmt, json={"name": "t"}).json["token"]
    packument = f"/packages/npm/@differential.dev/{cluster}"
    assert api.client.get(packument, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    r = api.client.delete(f"/clusters/{cluster}", headers=api.mgmt)
    assert r.status_code == 202 and r.json["finished"], r.json
    assert rows(ClientLibrary, cluster) == [] and rows(RegistryToken, cluster) == []
    assert api.client.get(packument, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_cluster_id_that_cannot_name_a_package_is_refused(api):
    from app.models import Cluster

    db.unit_of_work(lambda: Cluster.update(id="Cluster_Odd").where(Cluster.id == api.new_cluster()["id"]).execute())
    r = api.client.post("/clusters/Cluster_Odd/client-libraries", headers=api.mgmt)
    assert r.status_code == 409 and r.json["error"]["code"] == "cluster_not_packageable"

