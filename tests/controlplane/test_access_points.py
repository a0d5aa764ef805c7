"""Access points: a named token that may call some services of one cluster and nothing else.

Management routes (bad input, 404 for an unknown cluster), the token stored only as a hash, each use
in the activity log, and the original's defects (reference §18): S2, a token working on another
cluster's path; S3, one cache for two credential kinds; S4, revocation late by a cache's TTL
(here checked across two replicas on one PostgreSQL)."""
from __future__ import annotations

import hashlib
import re

import httpx
import pytest

from app import db
from app.engine import access_points
from app.models import AccessPoint, Job

from cp_helpers import Api

TOKEN = re.compile(r"^sk_ap_[0-9a-f]{64}$")


def put(api: Api, cluster_id: str, name: str, services, status: int = 200) -> dict:
    r = api.client.put(f"/clusters/{cluster_id}/access-point/{name}", headers=api.mgmt,
                       json={"allowedServices": services})
    assert r.status_code == status, r.json
    return r.json


def execute(api: Api, cluster_id: str, token: str, service: str = "svc", fn: str = "fn", **extra):
    return api.client.post(f"/clusters/{cluster_id}/execute", headers={"Authorization": f"Bearer {token}"},
                           json={"service": service, "function": fn, "args": [1], "waitSeconds": 0, **extra})


def jobs_of(app, cluster_id: str) -> list[Job]:
    return db.unit_of_work(lambda: list(Job.select().where(Job.cluster_id == cluster_id)), transaction=False)


def test_a_token_is_minted_answered_once_and_stored_only_as_its_hash(api, app):
    cluster = api.new_cluster()
    made = put(api, cluster["id"], "billing-ops", "svc, other ,svc")
    assert TOKEN.match(made["token"])
    assert made["name"] == "billing-ops" and made["allowedServices"] == ["svc", "other"]
    assert made["createdAt"] == made["rotatedAt"] and made["lastUsedAt"] is None
    [row] = db.unit_of_work(lambda: list(AccessPoint.select()), transaction=False)
    assert row.token_hash == hashlib.sha256(made["token"].encode()).hexdigest()
    assert made["token"] not in repr(row.__data__)
    listed = api.client.get(f"/clusters/{cluster['id']}/access-points", headers=api.mgmt)
    assert listed.status_code == 200
    assert listed.json == {"accessPoints": [{k: v for k, v in made.items() if k != "token"}]}
    assert made["token"] not in listed.get_data(as_text=True)


def test_allowed_service_calls_and_each_use_is_in_the_activity_log(api, app):
    cluster = api.new_cluster()
    token = put(api, cluster["id"], "ops", ["svc"])["token"]
    r = execute(api, cluster["id"], token)
    assert r.status_code == 202, r.json
    [job] = jobs_of(app, cluster["id"])
    assert (job.id, job.service, job.target_fn) == (r.json["jobId"], "svc", "fn")
    used = [e for e in api.activity(cluster) if e["type"] == "accessPointUsed"]
    assert used == [{**used[0], "jobId": job.id, "service": "svc", "meta": {"accessPoint": "ops", "targetFn": "fn"}}]
    listed = api.client.get(f"/clusters/{cluster['id']}/access-points", headers=api.mgmt).json["accessPoints"]
    assert listed[0]["lastUsedAt"] is not None


def test_a_star_allows_every_service_and_the_cluster_secret_records_no_use(api, app):
    cluster = api.new_cluster()
    token = put(api, cluster["id"], "all", "*")["token"]
    assert execute(api, cluster["id"], token, service="anything").status_code == 202
    assert execute(api, cluster["id"], cluster["apiSecret"], service="else").status_code == 202
    assert len(jobs_of(app, cluster["id"])) == 2
    assert [e["service"] for e in api.activity(cluster) if e["type"] == "accessPointUsed"] == ["anything"]


def test_forbidden_service_is_403_and_makes_no_job(api, app):
    cluster = api.new_cluster()
    token = put(api, cluster["id"], "ops", "svc")["token"]
    r = execute(api, cluster["id"], token, service="payroll")
    assert r.status_code == 403 and r.json["error"]["code"] == "service_not_allowed"
    assert r.json["error"]["details"] == {"accessPoint": "ops", "service": "payroll"}
    assert jobs_of(app, cluster["id"]) == []


def test_another_clusters_path_is_401_and_no_job_is_made_in_either(api, app):
    a, b = api.new_cluster(), api.new_cluster()
    token = put(api, a["id"], "ops", "*")["token"]
    assert execute(api, a["id"], token).status_code == 202  # used once on its own cluster (S2: then cached)
    for credential in (token, a["apiSecret"]):
        r = execute(api, b["id"], credential)
        assert r.status_code == 401 and r.json["error"]["code"] == "invalid_credential", r.json
    assert len(jobs_of(app, a["id"])) == 1 and jobs_of(app, b["id"]) == []
    assert api.client.get(f"/clusters/{b['id']}/execute/{jobs_of(app, a['id'])[0].id}",
                          headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_unknown_or_missing_credentials_are_401(api, app):
    cluster = api.new_cluster()
    for header in ({"Authorization": "Bearer sk_ap_" + "0" * 64}, {"Authorization": "Basic "}, {}):
        r = api.client.post(f"/clusters/{cluster['id']}/execute", headers=header,
                            json={"service": "svc", "function": "fn"})
        assert r.status_code == 401, (header, r.json)
    r = execute(api, cluster["id"], api.mgmt["Authorization"].split()[1])  # the management secret calls nothing
    assert r.status_code == 401
    assert jobs_of(app, cluster["id"]) == []


def test_an_access_point_token_is_no_cluster_secret_and_a_refusal_there_does_not_block_it(api, app):
    """S3: one cache answered both credential kinds. Here a token refused by a cluster-secret
    route (and remembered as refused for a few seconds) still works on execute at once."""
    cluster = api.new_cluster()
    token = put(api, cluster["id"], "ops", "svc")["token"]
    r = api.client.post("/jobs", headers={"Authorization": f"Basic {token}"},
                        json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
    assert r.status_code == 401
    assert api.client.get("/services/svc", headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert execute(api, cluster["id"], token).status_code == 202


def test_rotation_and_deletion_take_effect_at_once(api, app):
    cluster = api.new_cluster()
    old = put(api, cluster["id"], "ops", "svc")["token"]
    assert execute(api, cluster["id"], old).status_code == 202
    rotated = put(api, cluster["id"], "ops", "svc,other")
    assert rotated["token"] != old and rotated["rotatedAt"] >= rotated["createdAt"]
    assert execute(api, cluster["id"], old).status_code == 401
    assert execute(api, cluster["id"], rotated["token"], service="other").status_code == 202
    assert api.client.delete(f"/clusters/{cluster['id']}/access-point/ops", headers=api.mgmt).status_code == 204
    assert execute(api, cluster["id"], rotated["token"]).status_code == 401
    r = api.client.delete(f"/clusters/{cluster['id']}/access-point/ops", headers=api.mgmt)
    assert r.status_code == 404 and r.json["error"]["code"] == "access_point_not_found"


@pytest.mark.parametrize(("name", "services", "field"), [
    ("bad%20name", "svc", "name"), ("-dash", "svc", "name"), ("a" * 129, "svc", "name"),
    ("ok", "", "allowedServices"), ("ok", " , ", "allowedServices"), ("ok", [], "allowedServices"),
    ("ok", ["a,b"], "allowedServices[0]"), ("ok", ["fine", "bad\u0001"], "allowedServices[1]"),
    ("ok", ",".join(f"s{i}" for i in range(101)), "allowedServices"), ("ok", [1], "allowedServices[0]"),
    ("ok", 7, "allowedServices"), ("ok", ["s" * 201], "allowedServices[0]"),
])
def test_management_bad_input_is_400_naming_the_field(api, name, services, field):
    cluster = api.new_cluster()
    r = api.client.put(f"/clusters/{cluster['id']}/access-point/{name}", headers=api.mgmt,
                       json={"allowedServices": services})
    assert r.status_code == 400, r.json
    assert [f["field"] for f in r.json["error"]["details"]["fields"]][0] == field, r.json


def test_management_routes_need_the_management_secret_and_404_an_unknown_cluster(api):
    cluster = api.new_cluster()
    other = {"Authorization": f"Basic {cluster['apiSecret']}"}
    assert api.client.put(f"/clusters/{cluster['id']}/access-point/ops", headers=other,
                          json={"allowedServices": "*"}).status_code == 401
    assert api.client.get(f"/clusters/{cluster['id']}/access-points", headers=other).status_code == 401
    for method, path, body in (("PUT", "/clusters/nope/access-point/ops", {"allowedServices": "*"}),
                               ("GET", "/clusters/nope/access-points", None),
                               ("DELETE", "/clusters/nope/access-point/ops", None)):
        r = api.client.open(path, method=method, headers=api.mgmt, json=body)
        assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found", (method, r.json)
    r = api.client.put(f"/clusters/{cluster['id']}/access-point/ops", headers=api.mgmt,
                       json={"allowedServices": "*", "extra": 1})
    assert r.status_code == 400


def test_last_used_is_written_at_most_once_a_minute_per_access_point():
    now = [1000.0]
    uses = access_points._UseWrites(every=60, clock=lambda: now[0])
    assert uses.due(("c", 1)) and not uses.due(("c", 1)) and uses.due(("c", 2)) and uses.due(("d", 1))
    now[0] += 59.9
    assert not uses.due(("c", 1))
    now[0] += 0.2
    assert uses.due(("c", 1))


@pytest.mark.postgres
@pytest.mark.slow
def test_rotation_and_deletion_effective_at_once_across_two_replicas(fresh_pg_url):
    from support.server import ControlPlane

    a = ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "1"})
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env={"WEB_CONCURRENCY": "1"})
    try:
        a.start()
        b.start()
        cluster = a.create_cluster()
        with httpx.Client(base_url=a.url, headers=a.management_headers, timeout=30) as on_a, \
                httpx.Client(base_url=b.url, timeout=30) as on_b:
            def call(token: str) -> int:
                return on_b.post(f"/clusters/{cluster['id']}/execute", headers={"Authorization": f"Bearer {token}"},
                                 json={"service": "svc", "function": "fn", "waitSeconds": 0}).status_code

            old = on_a.put(f"/clusters/{cluster['id']}/access-point/ops", json={"allowedServices": "svc"}).json()["token"]
            assert call(old) == 202
            new = on_a.put(f"/clusters/{cluster['id']}/access-point/ops", json={"allowedServices": "svc"}).json()["token"]
            assert call(old) == 401  # at once: no wait, no cache on B
            assert call(new) == 202
            assert on_a.delete(f"/clusters/{cluster['id']}/access-point/ops").status_code == 204
            assert call(new) == 401
    finally:
        b.stop()
        a.stop()


def test_the_credential_is_checked_before_the_path(api):
    """A caller route answers 401 to a wrong credential whatever the path holds (an id longer than
    any stored one is 404 only after the credential passed), as every guarded route does."""
    long_id = "c" * 300
    for path in (f"/clusters/{long_id}/execute", f"/clusters/{long_id}/execute/{'j' * 300}"):
        r = api.client.open(path, method="POST" if path.endswith("execute") else "GET",
                            headers={"Authorization": "Bearer wrong"}, json={})
        assert r.status_code == 401, (path, r.json)


def test_concurrent_puts_of_one_new_name_leave_one_access_point_with_the_last_token(app):
    import threading

    api = Api(app)
    cluster = api.new_cluster()
    tokens, errors = [], []

    def put_one():
        r = Api(app).client.put(f"/clusters/{cluster['id']}/access-point/race", headers=api.mgmt,
                                json={"allowedServices": "svc"})
        (tokens if r.status_code == 200 else errors).append(r.json)

    threads = [threading.Thread(target=put_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(tokens) == 8
    [row] = db.unit_of_work(lambda: list(AccessPoint.select()), transaction=False)
    assert sum(hashlib.sha256(t["token"].encode()).hexdigest() == row.token_hash for t in tokens) == 1


def test_a_cluster_being_deleted_takes_no_more_calls_through_its_access_points(api, app):
    from app.models import Cluster, utcnow

    cluster = api.new_cluster()
    token = put(api, cluster["id"], "ops", "*")["token"]
    assert execute(api, cluster["id"], token).status_code == 202
    db.unit_of_work(lambda: Cluster.update(deleted_at=utcnow()).where(Cluster.id == cluster["id"]).execute())
    assert execute(api, cluster["id"], token).status_code == 401
    assert len(jobs_of(app, cluster["id"])) == 1
