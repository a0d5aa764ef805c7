"""Deleting a cluster: it authenticates nothing at once (every process, both replicas), its access
points go with the mark, then every row of it goes in batches, and nothing of another cluster;
a deletion interrupted half-way is finished by maintenance."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import httpx
import peewee
import pytest

from app import db, models
from app.engine import access_points, cluster_deletion
from app.engine.maintenance import FinishClusterDeletions, Maintainer
from app.models import AccessPoint, Event, Job, MetricRollup, Schedule, utcnow
from support.server import ControlPlane

from cp_helpers import MANAGEMENT_SECRET

JOBS, EVENTS = 1_500, 2_500  # more than one batch of each


def populate(api, cluster: dict, *, bulk: bool = True) -> str:
    """Rows of the cluster in every table that has one: jobs, events, machines, workers, services,
    schedules, access points, metric rollups. Returns an access point's token."""
    cid = cluster["id"]
    job = api.call(cluster)
    api.claim(cluster)
    api.result(cluster, job)
    r = api.client.post(f"/clusters/{cid}/schedules", headers=api.mgmt,
                        json={"name": "nightly", "service": "svc", "function": "fn", "arguments": [], "cron": "0 3 * * *"})
    assert r.status_code == 201, r.json
    r = api.client.put(f"/clusters/{cid}/service/schema-only/schema", headers=api.mgmt, json={"schema": {"type": "object"}})
    assert r.status_code == 204
    api.activity(cluster)  # flushes the events
    token = f"sk_ap_{cid}"
    db.unit_of_work(lambda: _bulk(cid, token, bulk))
    return token


def _bulk(cid: str, token: str, bulk: bool) -> None:
    AccessPoint.create(cluster_id=cid, name="ap", token_hash=hashlib.sha256(token.encode()).hexdigest(),
                       services=json.dumps(["svc"]))
    MetricRollup.create(cluster_id=cid, service="svc", target_fn="fn", minute_ms=0, outcome="resolution", calls=1,
                        exec_ms_sum=1, queue_ms_sum=1, exec_histogram="[]", queue_histogram="[]")
    if bulk:
        now = utcnow()
        rows = [{"cluster_id": cid, "id": f"bulk-{i}", "service": "svc", "target_fn": "fn", "target_args": "kA==",
                 "attempts_allowed": 1, "timeout_seconds": 60, "created_at": now} for i in range(JOBS)]
        for start in range(0, JOBS, 500):
            Job.insert_many(rows[start:start + 500]).execute()
        events = [{"cluster_id": cid, "type": "bulk", "created_at": now} for _ in range(EVENTS)]
        for start in range(0, EVENTS, 500):
            Event.insert_many(events[start:start + 500]).execute()


def rows_naming(cluster_id: str) -> dict[str, int]:
    """Per table of models.ALL_MODELS, the rows with the cluster id in any text column."""
    return db.unit_of_work(lambda: _rows_naming(cluster_id))


def _rows_naming(cluster_id: str) -> dict[str, int]:
    found = {}
    for model in models.ALL_MODELS:
        columns = [f for f in model._meta.sorted_fields if isinstance(f, (peewee.CharField, peewee.TextField))]
        condition = None
        for column in columns:
            term = column.contains(cluster_id)
            condition = term if condition is None else condition | term
        n = model.select().where(condition).count() if condition is not None else 0
        if n:
            found[model._meta.table_name] = n
    return found


def delete(api, cluster_id: str, headers=None):
    return api.client.delete(f"/clusters/{cluster_id}", headers=api.mgmt if headers is None else headers)


def test_deletion_leaves_nothing_of_the_cluster_in_batches_and_keeps_every_row_of_others(api, monkeypatch):
    doomed, kept = api.new_cluster(), api.new_cluster()
    populate(api, doomed)
    populate(api, kept, bulk=False)
    before_kept = rows_naming(kept["id"])
    assert set(rows_naming(doomed["id"])) >= {"clusters", "jobs", "events", "machines", "workers", "services",
                                               "schedules", "access_points", "metric_rollups"}
    statements = []
    real = cluster_deletion.delete_batch
    monkeypatch.setattr(cluster_deletion, "delete_batch",
                        lambda model, cid, batch=cluster_deletion.BATCH: statements.append(
                            (model._meta.table_name, n := real(model, cid, batch))) or n)
    r = delete(api, doomed["id"])
    assert r.status_code == 202 and r.json["id"] == doomed["id"] and r.json["finished"] is True
    assert all(n <= cluster_deletion.BATCH for _, n in statements)
    assert [n for table, n in statements if table == "jobs"] == [1000, JOBS + 1 - 1000]  # in batches
    assert [t for t, _ in statements if _ > 0] == ["jobs", "jobs", "events", "events", "events", "machines",
                                                    "workers", "services", "schedules", "metric_rollups"]
    assert rows_naming(doomed["id"]) == {"clusters": 1}  # the tombstone, until it settled
    task = FinishClusterDeletions()
    assert task.run_once(utcnow())["deletedClusters"] == 0
    later = utcnow() + dt.timedelta(seconds=cluster_deletion.SETTLE_SECONDS + 1)
    assert task.run_once(later) == {"deletedRows": 0, "deletedClusters": 1}
    assert rows_naming(doomed["id"]) == {}
    assert rows_naming(kept["id"]) == before_kept
    assert api.client.get(f"/clusters/{kept['id']}", headers=api.mgmt).status_code == 200
    assert api.status(kept, api.call(kept))["status"] == "pending"


def test_a_deleted_cluster_authenticates_nothing_at_once_and_its_routes_answer_404(api):
    cluster = api.new_cluster()
    token = populate(api, cluster, bulk=False)
    job = api.call(cluster)
    assert api.status(cluster, job)["status"] == "pending"  # the secret is cached now
    assert access_points.grant_for_token(token) is not None
    assert delete(api, cluster["id"]).status_code == 202
    h = api.headers(cluster)
    assert api.client.get(f"/jobs/{job}?ttl=0", headers=h).status_code == 401
    assert api.client.post("/jobs", headers=h, json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}
                           ).status_code == 401
    assert access_points.grant_for_token(token) is None
    cid = cluster["id"]
    for method, path in [("GET", f"/clusters/{cid}"), ("GET", f"/clusters/{cid}/settings"),
                         ("GET", f"/clusters/{cid}/activity"), ("GET", f"/clusters/{cid}/jobs"),
                         ("GET", f"/clusters/{cid}/service/svc"), ("GET", f"/clusters/{cid}/schedules"),
                         ("GET", f"/clusters/{cid}/service/schema-only/schema"), ("DELETE", f"/clusters/{cid}"),
                         ("POST", f"/clusters/{cid}/jobs/{job}/cancel")]:
        r = api.client.open(path, method=method, headers=api.mgmt)
        assert r.status_code == 404, (method, path, r.status_code)
    r = api.client.post(f"/clusters/{cid}/secret/rotate", headers=api.mgmt, json={"graceSeconds": 0})
    assert r.status_code == 404
    r = api.client.put(f"/clusters/{cid}/service/svc/schema", headers=api.mgmt, json={"schema": "{}"})
    assert r.status_code == 404
    assert cid not in [c["id"] for c in api.client.get("/clusters", headers=api.mgmt).json]


def test_delete_needs_the_management_secret_and_an_existing_cluster(api):
    a, b = api.new_cluster(), api.new_cluster()
    for header in ({}, {"Authorization": f"Basic {a['apiSecret']}"}, {"Authorization": f"Basic {MANAGEMENT_SECRET}x"}):
        assert delete(api, a["id"], header).status_code == 401
    r = delete(api, "cluster-none-0000000000")
    assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found"
    assert delete(api, a["id"]).status_code == 202
    assert api.status(b, api.call(b))["status"] == "pending"  # the other cluster is untouched
    assert api.client.get(f"/clusters/{b['id']}", headers=api.mgmt).status_code == 200


def test_a_deletion_interrupted_half_way_is_finished_by_maintenance(api, monkeypatch):
    doomed, kept = api.new_cluster(), api.new_cluster()
    populate(api, doomed)
    populate(api, kept, bulk=False)
    before_kept = rows_naming(kept["id"])
    real = cluster_deletion.delete_batch
    done = []

    def dies_after_one(model, cid, batch=cluster_deletion.BATCH):
        if len(done) == 1:
            raise SystemExit("the process died")  # as a SIGKILL would, between two batches
        done.append(1)
        return real(model, cid, batch)

    monkeypatch.setattr(cluster_deletion, "delete_batch", dies_after_one)
    with pytest.raises(SystemExit):
        delete(api, doomed["id"])
    monkeypatch.setattr(cluster_deletion, "delete_batch", real)
    left = rows_naming(doomed["id"])
    assert left["jobs"] == JOBS + 1 - 1000 and left["events"] >= EVENTS  # one batch went
    assert "access_points" not in left  # they go with the mark
    assert api.client.get(f"/clusters/{doomed['id']}", headers=api.mgmt).status_code == 404  # marked, though
    assert api.client.get("/jobs/x?ttl=0", headers=api.headers(doomed)).status_code == 401
    maintainer = Maintainer.for_settings(interval=0.5, machine_timeout=90, retention_days=7)
    done_now = maintainer.tick(now=utcnow())
    assert done_now["finish_cluster_deletions"]["deletedRows"] > 0
    assert rows_naming(doomed["id"]) == {"clusters": 1}
    later = utcnow() + dt.timedelta(seconds=cluster_deletion.SETTLE_SECONDS + 1)
    assert maintainer.tick(now=later)["finish_cluster_deletions"] == {"deletedRows": 0, "deletedClusters": 1}
    assert rows_naming(doomed["id"]) == {}
    assert rows_naming(kept["id"]) == before_kept


def test_rows_written_after_the_purge_by_requests_in_flight_go_before_the_tombstone(api):
    cluster = api.new_cluster()
    assert delete(api, cluster["id"]).json["finished"] is True
    # e.g. an event buffered by another process, flushed after this process's purge
    db.unit_of_work(lambda: Event.create(cluster_id=cluster["id"], type="late"))
    db.unit_of_work(lambda: Schedule.insert(
        cluster_id=cluster["id"], name="late", service="s", target_fn="f", arguments="[]", target_args="kA==",
        cron="* * * * *", timezone="UTC", catch_up="none").execute())
    later = utcnow() + dt.timedelta(seconds=cluster_deletion.SETTLE_SECONDS + 1)
    assert FinishClusterDeletions().run_once(later) == {"deletedRows": 2, "deletedClusters": 1}
    assert rows_naming(cluster["id"]) == {}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_deleted_clusters_secret_is_refused_by_both_replicas_within_a_second(fresh_pg_url):
    env = {"WEB_CONCURRENCY": "2", "SWEEPER_ENABLED": "false"}
    a = ControlPlane(fresh_pg_url, env=env)
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env=env)
    with a, b:
        cluster, kept = a.create_cluster(), a.create_cluster()
        auth = {"Authorization": f"Basic {cluster['apiSecret']}"}
        for replica in (a, b):
            for _ in range(20):  # cached on every worker of both replicas
                assert httpx.get(replica.url + "/jobs/none?ttl=0", headers=auth, timeout=10).status_code == 404
        r = httpx.delete(f"{a.url}/clusters/{cluster['id']}", headers=a.management_headers, timeout=30)
        assert r.status_code == 202, r.text
        started = time.monotonic()
        while True:
            codes = {httpx.get(replica.url + "/jobs/none?ttl=0", headers=auth, timeout=10).status_code
                     for replica in (a, b) for _ in range(10)}
            if codes == {401}:
                break
            assert time.monotonic() - started < 1.0, f"the deleted cluster's secret still worked: {codes}"
        kept_auth = {"Authorization": f"Basic {kept['apiSecret']}"}
        assert httpx.get(b.url + "/jobs/none?ttl=0", headers=kept_auth, timeout=10).status_code == 404
