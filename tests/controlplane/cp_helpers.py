"""Helpers shared by the control-plane tests (a module of its own: every test folder has a
conftest, so `from conftest import ...` would pick whichever was imported first)."""
from __future__ import annotations

from app.engine import machines
from app.settings import MANAGEMENT_SECRET_PREFIX

MANAGEMENT_SECRET = MANAGEMENT_SECRET_PREFIX + "t" * 40


class Api:
    """A test client speaking the protocol as the SDK does."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        self.mgmt = {"Authorization": f"Basic {MANAGEMENT_SECRET}"}

    def new_cluster(self) -> dict:
        r = self.client.post("/clusters", headers=self.mgmt)
        assert r.status_code == 201, r.json
        return r.json

    def headers(self, cluster: dict, machine: str | None = "machine-a") -> dict:
        h = {"Authorization": f"Basic {cluster['apiSecret']}"}
        if machine:
            h["x-machine-id"] = machine
        return h

    def call(self, cluster, service="svc", fn="fn", args="kA==", **config):
        body = {"service": service, "targetFn": fn, "targetArgs": args}
        if config:
            body["callConfig"] = config
        r = self.client.post("/jobs", headers=self.headers(cluster), json=body)
        assert r.status_code == 201, r.json
        return r.json["id"]

    def claim(self, cluster, service="svc", machine="machine-a", limit=10, ttl=0):
        r = self.client.post("/jobs-request", headers=self.headers(cluster, machine),
                             json={"service": service, "limit": limit, "ttl": ttl, "functions": [{"name": "fn"}]})
        assert r.status_code == 200, r.json
        machines.flush()  # its machine and worker rows are written, as a reader here would see them
        return r.json

    def result(self, cluster, job_id, machine="machine-a", value="oA==", kind="resolution"):
        r = self.client.post(f"/jobs/{job_id}/result", headers=self.headers(cluster, machine),
                             json={"result": value, "resultType": kind, "functionExecutionTime": 1})
        assert r.status_code == 204, r.data
        return r

    def status(self, cluster, job_id, ttl=0):
        r = self.client.get(f"/jobs/{job_id}?ttl={ttl}", headers=self.headers(cluster))
        assert r.status_code == 200, r.json
        return r.json

    def activity(self, cluster):
        from app.observability.events import events

        events.flush()
        r = self.client.get(f"/clusters/{cluster['id']}/activity?limit=1000", headers=self.mgmt)
        assert r.status_code == 200, r.json
        return r.json["events"]


def settle_listener() -> None:
    """PostgreSQL: start this process's notification listener and wait until it has connected and
    cleared the caches that hear of changes through it (it does on every connect, since anything may
    have changed unheard), so that a test counting cache hits is not cut in two by that clear."""
    from app.engine import controls
    from app.engine.signals import hub
    from support.waiting import wait_until

    if hub.listening:
        return
    before = controls.function_defaults.epoch
    hub.ensure_listening()
    wait_until(lambda: hub.listening and controls.function_defaults.epoch > before, timeout=10,
               what="the notification listener connected")
