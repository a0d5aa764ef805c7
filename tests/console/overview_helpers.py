"""A worker and a caller speaking the protocol to the in-process app, for the overview,
services and monitoring tests (as the SDKs do: poll with a function list, call, claim, result)."""
from __future__ import annotations

import datetime as dt

from app import db
from app.engine import clusters, machines
from app.models import Job, Worker


class Protocol:
    def __init__(self, app, description: str = "console test"):
        self.client = app.test_client()
        self.cluster = clusters.create_cluster(description)
        self.id = self.cluster["id"]

    def headers(self, machine: str | None = "machine-a") -> dict:
        h = {"Authorization": f"Basic {self.cluster['apiSecret']}"}
        if machine:
            h["x-machine-id"] = machine
        return h

    def poll(self, service: str, functions=("fn",), machine: str = "machine-a", limit: int = 0) -> list[dict]:
        body = {"service": service, "limit": limit, "ttl": 0,
                "functions": [f if isinstance(f, dict) else {"name": f} for f in functions]}
        r = self.client.post("/jobs-request", headers=self.headers(machine), json=body)
        assert r.status_code == 200, r.json
        return r.json

    def call(self, service: str, fn: str = "fn", args: str = "kA==", **config) -> str:
        body = {"service": service, "targetFn": fn, "targetArgs": args}
        if config:
            body["callConfig"] = config
        r = self.client.post("/jobs", headers=self.headers(None), json=body)
        assert r.status_code == 201, r.json
        return r.json["id"]

    def result(self, job_id: str, kind: str = "resolution", machine: str = "machine-a", exec_ms: int = 5) -> None:
        r = self.client.post(f"/jobs/{job_id}/result", headers=self.headers(machine),
                             json={"result": "oA==", "resultType": kind, "functionExecutionTime": exec_ms})
        assert r.status_code == 204, r.data

    def run(self, service: str, fn: str = "fn", kind: str = "resolution", exec_ms: int = 5,
            machine: str = "machine-a") -> str:
        """One call, claimed and answered."""
        job_id = self.call(service, fn)
        claimed = self.poll(service, functions=(fn,), machine=machine, limit=1)
        assert [j["id"] for j in claimed] == [job_id]
        self.result(job_id, kind, machine, exec_ms)
        return job_id


def set_job(job_id: str, **fields) -> None:
    db.unit_of_work(lambda: Job.update(**fields).where(Job.id == job_id).execute())


def silence(cluster_id: str, machine: str, seconds: float = 3600) -> None:
    """Make a machine's polls look `seconds` old (it stopped polling)."""
    machines.flush()  # its latest poll is written first, not over the old time afterwards
    old = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=seconds)
    db.unit_of_work(lambda: Worker.update(last_poll_at=old).where(
        (Worker.cluster_id == cluster_id) & (Worker.machine_id == machine)).execute())
