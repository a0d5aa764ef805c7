"""What a create reads of its service (the functions' default back-off, the active deployment) is
cached per process until a change is heard: every process forgets it when any process notifies
SERVICES_TOPIC, which a changed definition and an activation or inactivation do in their commit."""
from __future__ import annotations

import json
import select
import time
from contextlib import closing

import psycopg2
import pytest

from app import db
from app.engine import controls, deployments, machines
from app.engine.signals import CHANNEL, SERVICES_TOPIC
from app.engine.states import DeploymentStatus as S
from app.models import Deployment, Job, Service, utcnow
from cp_helpers import settle_listener
from support.waiting import wait_until


@pytest.fixture
def backend():
    return "postgres"  # other processes hear of changes through PostgreSQL's NOTIFY


@pytest.fixture
def pg_api(api):
    controls.function_defaults.clear()
    machines._definitions._seen.clear()
    settle_listener()
    yield api
    controls.function_defaults.clear()


def _register(api, cluster, attempts: int, machine: str = "worker-1") -> None:
    r = api.client.post("/jobs-request", headers=api.headers(cluster, machine),
                        json={"service": "svc", "limit": 0, "ttl": 0,
                              "functions": [{"name": "fn", "retryOnRejection": {"attempts": attempts}}]})
    assert r.status_code == 200, r.json


def _attempts(api, cluster) -> int | None:
    job_id = api.call(cluster)
    return db.unit_of_work(lambda: Job.get(Job.id == job_id), transaction=False).backoff_attempts


class _Listener:
    """A LISTEN connection of its own, as another process's listener."""

    def __init__(self, url: str):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")

    def topics(self, seconds: float) -> list[str]:
        got, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.conn], [], [], left)[0]:
                self.conn.poll()
                while self.conn.notifies:
                    got += self.conn.notifies.pop(0).payload.split("\n")
        return got

    def close(self):
        self.conn.close()


def test_a_definition_another_process_stores_reaches_this_processs_creates_when_it_notifies(pg_api, fresh_pg_url):
    api = pg_api
    cluster = api.new_cluster()
    _register(api, cluster, 2)
    assert _attempts(api, cluster) == 2
    # Another process stores a new definition: without its NOTIFY, the cached one stays (while
    # listening, entries last minutes, not the 5 s they last without the listener).
    definition = json.dumps({"name": "svc", "functions": [{"name": "fn", "retryOnRejection": {"attempts": 5}}]})
    with closing(psycopg2.connect(fresh_pg_url)) as other:
        other.autocommit = True
        with other.cursor() as cur:
            cur.execute("UPDATE services SET definition = %s, definition_hash = 'elsewhere' "
                        "WHERE cluster_id = %s AND name = 'svc'", (definition, cluster["id"]))
        assert _attempts(api, cluster) == 2
        with other.cursor() as cur:
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SERVICES_TOPIC))
        wait_until(lambda: _attempts(api, cluster) == 5, timeout=10)


def test_a_changed_definition_notifies_and_the_same_one_again_does_not(pg_api, fresh_pg_url):
    api = pg_api
    cluster = api.new_cluster()
    listener = _Listener(fresh_pg_url)
    try:
        _register(api, cluster, 2)
        assert SERVICES_TOPIC in listener.topics(1.0)  # new: the others may have cached "no definition"
        machines._definitions._seen.clear()  # as another process, which has not written it yet
        _register(api, cluster, 2, machine="worker-2")
        assert SERVICES_TOPIC not in listener.topics(1.0)  # what is stored did not change
        _register(api, cluster, 4)
        assert SERVICES_TOPIC in listener.topics(1.0)
        stored = db.unit_of_work(lambda: Service.get((Service.cluster_id == cluster["id"]) & (Service.name == "svc")),
                                 transaction=False)
        assert json.loads(stored.definition)["functions"][0]["retryOnRejection"]["attempts"] == 4
        assert _attempts(api, cluster) == 4  # and this process's own creates have it at once
    finally:
        listener.close()


def _deployment(cluster_id: str) -> Deployment:
    now = utcnow()
    return db.unit_of_work(lambda: Deployment.create(
        id="dep-1", cluster_id=cluster_id, service="svc", status=S.DEPLOYING, provider="lambda",
        runtime="python3.13", stack_name="stack-1", function_name="fn-1", created_at=now, updated_at=now))


def test_activating_and_inactivating_a_deployment_notify_the_others(pg_api, fresh_pg_url):
    cluster = pg_api.new_cluster()
    row = _deployment(cluster["id"])
    listener = _Listener(fresh_pg_url)
    try:
        assert db.unit_of_work(lambda: deployments._move(row, S.ACTIVE, activated_at=utcnow()))
        assert SERVICES_TOPIC in listener.topics(1.0)
        assert db.unit_of_work(lambda: deployments._move(row, S.INACTIVE))
        assert SERVICES_TOPIC in listener.topics(1.0)
        assert db.unit_of_work(lambda: deployments._move(row, S.DEPLOYING))
        assert db.unit_of_work(lambda: deployments._move(row, S.FAILED, reason="its stack failed"))
        assert SERVICES_TOPIC not in listener.topics(1.0)  # never active: what calls carry did not change
    finally:
        listener.close()


def test_another_processs_activation_reaches_this_processs_creates_when_it_notifies(pg_api, fresh_pg_url):
    cluster = pg_api.new_cluster()
    _deployment(cluster["id"])
    assert deployments.active_for(cluster["id"], "svc") is None  # cached: no active deployment
    with closing(psycopg2.connect(fresh_pg_url)) as other:
        other.autocommit = True
        with other.cursor() as cur:
            cur.execute("UPDATE deployments SET status = %s WHERE id = 'dep-1'", (S.ACTIVE,))
        assert deployments.active_for(cluster["id"], "svc") is None  # not heard of yet
        with other.cursor() as cur:
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SERVICES_TOPIC))
        wait_until(lambda: deployments.active_for(cluster["id"], "svc") == "dep-1", timeout=10)


def test_while_the_listener_hears_changes_a_create_reads_neither_again(pg_api, monkeypatch):
    """A service called less often than the short TTL: without the listener each create would read
    its definition and its active deployment again; with it, neither."""
    api = pg_api
    cluster = api.new_cluster()
    _register(api, cluster, 2)
    monkeypatch.setattr(controls, "DEFAULTS_TTL_SECONDS", 0.0)  # every entry is older than these
    monkeypatch.setattr(deployments, "ACTIVE_TTL_SECONDS", 0.0)
    reads = []
    real = controls._read
    monkeypatch.setattr(controls, "_read", lambda *a: reads.append(a) or real(*a))
    assert _attempts(api, cluster) == 2
    cached_at = deployments._active[(cluster["id"], "svc")][0]
    assert _attempts(api, cluster) == _attempts(api, cluster) == 2
    assert reads == [] and deployments._active[(cluster["id"], "svc")][0] == cached_at
