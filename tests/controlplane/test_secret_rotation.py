"""Rotating a cluster's API secret: during the grace both secrets work on every cluster route, after
it only the new one; a grace of 0, and a second rotation during a grace, end the old secret at once
on every process (the secret cache included: NOTIFY on PostgreSQL, a generation check on SQLite)."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from app.engine import clusters
from support.server import ControlPlane

from cp_helpers import MANAGEMENT_SECRET


def rotate(api, cluster, **body):
    r = api.client.post(f"/clusters/{cluster['id']}/secret/rotate", headers=api.mgmt, json=body)
    assert r.status_code == 200, r.json
    return r.json


def works(api, secret: str, job_id: str | None = None) -> bool:
    """A create, a claim and a status read all authenticate with `secret` (all or none)."""
    h = {"Authorization": f"Basic {secret}", "x-machine-id": "m"}
    codes = [api.client.post("/jobs", headers=h, json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
             .status_code,
             api.client.post("/jobs-request", headers=h, json={"service": "other", "ttl": 0}).status_code]
    if job_id:
        codes.append(api.client.get(f"/jobs/{job_id}?ttl=0", headers=h).status_code)
    assert set(codes) in ({201, 200}, {401}), codes  # never a mix: a secret works or it does not
    return 401 not in codes


def test_both_secrets_work_during_the_grace_and_only_the_new_one_after_it(api):
    cluster = api.new_cluster()
    job = api.call(cluster)
    old = cluster["apiSecret"]
    assert works(api, old, job)  # cached now
    rotated = rotate(api, cluster, graceSeconds=1)
    new = rotated["apiSecret"]
    assert new != old and new.startswith("sk_") and rotated["graceSeconds"] == 1
    assert rotated["previousSecretExpiresAt"] > rotated["secretRotatedAt"]
    assert works(api, old, job) and works(api, new, job)
    listed = api.client.get("/clusters", headers=api.mgmt)
    assert old not in listed.get_data(as_text=True)  # the previous secret is never shown
    (shown,) = [c for c in listed.json if c["id"] == cluster["id"]]
    assert shown["apiSecret"] == new and shown["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    details = api.client.get(f"/clusters/{cluster['id']}", headers=api.mgmt).json
    assert details["apiSecret"] == new and details["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
    time.sleep(1.2)  # past the grace: the cached entry of the old secret expired with it
    assert not works(api, old, job)
    assert works(api, new, job)
    (shown,) = [c for c in api.client.get("/clusters", headers=api.mgmt).json if c["id"] == cluster["id"]]
    assert "previousSecretExpiresAt" not in shown


def test_a_grace_of_zero_refuses_the_old_secret_at_once(api):
    cluster = api.new_cluster()
    job = api.call(cluster)
    assert works(api, cluster["apiSecret"], job)
    rotated = rotate(api, cluster, graceSeconds=0)
    assert rotated["previousSecretExpiresAt"] == rotated["secretRotatedAt"]
    assert not works(api, cluster["apiSecret"], job)
    assert works(api, rotated["apiSecret"], job)
    assert api.status({"apiSecret": rotated["apiSecret"]}, job)["status"] == "pending"  # the jobs stay


def test_a_second_rotation_during_a_grace_ends_the_first_old_secret_at_once(api):
    cluster = api.new_cluster()
    first = rotate(api, cluster, graceSeconds=600)
    assert works(api, cluster["apiSecret"])
    second = rotate(api, cluster, graceSeconds=600)
    assert not works(api, cluster["apiSecret"])  # the secret before the first rotation
    assert works(api, first["apiSecret"]) and works(api, second["apiSecret"])


def test_the_default_grace_is_an_hour_and_the_body_is_optional(api):
    cluster = api.new_cluster()
    r = api.client.post(f"/clusters/{cluster['id']}/secret/rotate", headers=api.mgmt)
    assert r.status_code == 200 and r.json["graceSeconds"] == clusters.DEFAULT_GRACE_SECONDS == 3600
    assert works(api, cluster["apiSecret"]) and works(api, r.json["apiSecret"])


@pytest.mark.parametrize("body", [{"graceSeconds": -1}, {"graceSeconds": 7 * 86400 + 1}, {"graceSeconds": "60"},
                                  {"graceSeconds": 1.5}, {"grace": 60}, [60]])
def test_bad_input_is_400_naming_the_field_and_changes_nothing(api, body):
    cluster = api.new_cluster()
    r = api.client.post(f"/clusters/{cluster['id']}/secret/rotate", headers=api.mgmt, json=body)
    assert r.status_code == 400, r.json
    assert works(api, cluster["apiSecret"])
    (shown,) = [c for c in api.client.get("/clusters", headers=api.mgmt).json if c["id"] == cluster["id"]]
    assert shown["apiSecret"] == cluster["apiSecret"] and "secretRotatedAt" not in shown


def test_rotation_is_per_cluster_and_needs_the_management_secret(api):
    a, b = api.new_cluster(), api.new_cluster()
    path = f"/clusters/{a['id']}/secret/rotate"
    for header in ({}, {"Authorization": f"Basic {a['apiSecret']}"}, {"Authorization": "Basic " + MANAGEMENT_SECRET + "x"}):
        assert api.client.post(path, headers=header, json={"graceSeconds": 0}).status_code == 401
    assert works(api, a["apiSecret"])
    r = api.client.post("/clusters/cluster-none-0000000000/secret/rotate", headers=api.mgmt, json={"graceSeconds": 0})
    assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found"
    rotate(api, a, graceSeconds=0)
    assert works(api, b["apiSecret"])  # the other cluster's secret is untouched
    (shown_b,) = [c for c in api.client.get("/clusters", headers=api.mgmt).json if c["id"] == b["id"]]
    assert shown_b["apiSecret"] == b["apiSecret"]


def test_a_cached_secret_costs_no_query_and_the_generation_check_at_most_two_a_second(api, monkeypatch):
    """The hot path: a create or a claim authenticating by a cached secret. Without a listener
    (SQLite) one aggregate every GENERATION_CHECK_SECONDS; with one (PostgreSQL), none at all."""
    cluster = api.new_cluster()
    assert clusters.cluster_for_secret(cluster["apiSecret"]) == cluster["id"]
    calls = []
    real = clusters.db.unit_of_work
    me = threading.current_thread()  # the app's own threads (the event flush) use the database too

    def counted(*a, **k):
        if threading.current_thread() is me:
            calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(clusters.db, "unit_of_work", counted)
    started = time.monotonic()
    for _ in range(20_000):
        assert clusters.cluster_for_secret(cluster["apiSecret"]) == cluster["id"]
    elapsed = time.monotonic() - started
    assert len(calls) <= elapsed / clusters.GENERATION_CHECK_SECONDS + 1, (len(calls), elapsed)


# --- several processes ----------------------------------------------------------------------------

def _old_secret_refused_everywhere(url: str, secret: str, requests_: int = 12) -> bool:
    """Every one of `requests_` requests on new connections (so on any gunicorn worker) refuses it."""
    for _ in range(requests_):
        r = httpx.get(url + "/jobs/none?ttl=0", headers={"Authorization": f"Basic {secret}"}, timeout=10)
        if r.status_code != 401:
            return False
    return True


def _cache_everywhere(url: str, secret: str) -> None:
    for _ in range(20):
        r = httpx.get(url + "/jobs/none?ttl=0", headers={"Authorization": f"Basic {secret}"}, timeout=10)
        assert r.status_code == 404, r.text  # authenticated: the job does not exist


def _refused_within(url: str, secret: str, seconds: float) -> float:
    started = time.monotonic()
    while not _old_secret_refused_everywhere(url, secret):
        assert time.monotonic() - started < seconds, f"the old secret still worked after {seconds} s"
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_grace_zero_on_replica_a_is_refused_by_replica_b_within_a_second(fresh_pg_url):
    env = {"WEB_CONCURRENCY": "2", "SWEEPER_ENABLED": "false"}
    a = ControlPlane(fresh_pg_url, env=env)
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env=env)
    with a, b:
        cluster = a.create_cluster()
        _cache_everywhere(b.url, cluster["apiSecret"])
        r = httpx.post(f"{a.url}/clusters/{cluster['id']}/secret/rotate", headers=a.management_headers,
                       json={"graceSeconds": 0}, timeout=10)
        assert r.status_code == 200, r.text
        _refused_within(b.url, cluster["apiSecret"], 1.0)
        _cache_everywhere(b.url, r.json()["apiSecret"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_grace_zero_on_sqlite_is_refused_by_every_gunicorn_worker_within_a_second():
    with ControlPlane(env={"WEB_CONCURRENCY": "3", "SWEEPER_ENABLED": "false"}) as cp:
        cluster = cp.create_cluster()
        _cache_everywhere(cp.url, cluster["apiSecret"])
        r = httpx.post(f"{cp.url}/clusters/{cluster['id']}/secret/rotate", headers=cp.management_headers,
                       json={"graceSeconds": 0}, timeout=10)
        assert r.status_code == 200, r.text
        _refused_within(cp.url, cluster["apiSecret"], 1.0)
        _cache_everywhere(cp.url, r.json()["apiSecret"])
