"""Helpers shared by the fault-injection tests: a wire-protocol client, bounded waits, a worker.

Everything speaks HTTP to a real gunicorn control-plane (tests/support/server.py); nothing here
imports the app, so what is tested is what a deployed server does.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from typing import Callable, TypeVar

import httpx
import psycopg2
from support import waiting

T = TypeVar("T")

# Each fault test stays well under the 2-minute budget: every wait below is bounded by one of these.
HTTP_TIMEOUT = 30.0


def b64(value) -> str:
    """A result payload: the wire carries base64 of MessagePack; the server treats it as opaque."""
    return base64.b64encode(json.dumps(value).encode()).decode()


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """support.waiting.wait_until that keeps polling through errors (the server may be restarting)."""
    return waiting.wait_until(predicate, timeout, interval, what=what, tolerate=(Exception,))


class Wire:
    """The job protocol of one cluster on one control-plane, plus the management reads we assert on."""

    def __init__(self, url: str, cluster: dict, management_secret: str):
        self.url = url
        self.cluster = cluster
        self.http = httpx.Client(base_url=url, timeout=HTTP_TIMEOUT)
        self.auth = {"Authorization": f"Basic {cluster['apiSecret']}"}
        self.mgmt = {"Authorization": f"Basic {management_secret}"}

    def close(self) -> None:
        self.http.close()

    def machine(self, machine_id: str) -> dict:
        return {**self.auth, "x-machine-id": machine_id}

    def call(self, service: str = "svc", fn: str = "fn", args: str = "kA==", **config) -> str:
        body = {"service": service, "targetFn": fn, "targetArgs": args}
        if config:
            body["callConfig"] = config
        r = self.http.post("/jobs", json=body, headers=self.auth)
        assert r.status_code == 201, (r.status_code, r.text)
        return r.json()["id"]

    def claim(self, machine_id: str, service: str = "svc", limit: int = 1, ttl: int = 0) -> list[dict]:
        r = self.http.post("/jobs-request", json={"service": service, "limit": limit, "ttl": ttl},
                           headers=self.machine(machine_id))
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def result(self, job_id: str, machine_id: str, value: str, kind: str = "resolution") -> None:
        r = self.http.post(f"/jobs/{job_id}/result", json={"result": value, "resultType": kind},
                           headers=self.machine(machine_id))
        # Fenced or not, the answer is 204 (the published SDK kills its process on anything else).
        assert r.status_code == 204, (r.status_code, r.text)

    def status(self, job_id: str, ttl: int = 0) -> dict:
        r = self.http.get(f"/jobs/{job_id}", params={"ttl": ttl}, headers=self.auth)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def job_summary(self, job_id: str) -> dict:
        r = self.http.get(f"/clusters/{self.cluster['id']}", params={"limit": 1000}, headers=self.mgmt)
        assert r.status_code == 200, (r.status_code, r.text)
        found = [j for j in r.json()["jobs"] if j["id"] == job_id]
        assert found, f"job {job_id} not in the cluster details"
        return found[0]

    def activity(self, job_id: str | None = None) -> list[dict]:
        params = {"limit": 1000}
        if job_id:
            params["jobId"] = job_id
        r = self.http.get(f"/clusters/{self.cluster['id']}/activity", params=params, headers=self.mgmt)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["events"]

    def events_of(self, job_id: str, kind: str) -> list[dict]:
        return [e for e in self.activity(job_id) if e["type"] == kind]


# A worker as its own OS process, so it can be SIGKILLed like a real one. It claims jobs and
# prints one JSON line per claim (flushed), then either finishes each job at once ("work") or
# holds it forever without answering or pinging again ("hang": the process we will kill).
WORKER = textwrap.dedent("""
    import base64, json, sys, time, httpx
    url, secret, machine, service, mode, deadline = sys.argv[1:7]
    deadline = time.monotonic() + float(deadline)
    headers = {"Authorization": "Basic " + secret, "x-machine-id": machine}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        while time.monotonic() < deadline:
            r = http.post("/jobs-request", json={"service": service, "limit": 1, "ttl": 1000})
            if r.status_code != 200:
                print(json.dumps({"error": r.status_code, "body": r.text}), flush=True)
                time.sleep(0.2)
                continue
            for job in r.json():
                print(json.dumps({"claimed": job["id"]}), flush=True)
                if mode == "hang":
                    time.sleep(3600)  # busy "running" the job until killed
                value = base64.b64encode(json.dumps(machine).encode()).decode()
                res = http.post(f"/jobs/{job['id']}/result", json={"result": value, "resultType": "resolution"})
                print(json.dumps({"resulted": job["id"], "status": res.status_code}), flush=True)
""")


class WorkerProcess:
    def __init__(self, url: str, secret: str, machine_id: str, service: str, mode: str, lifetime: float = 90.0):
        self.machine_id = machine_id
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, secret, machine_id, service, mode, str(lifetime)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.lines: list[dict] = []
        self._partial = ""

    def read(self) -> list[dict]:
        """Every line printed so far (non-blocking)."""
        try:
            chunk = self.proc.stdout.read()
        except (TypeError, BlockingIOError):
            chunk = None
        if chunk:
            self._partial += chunk
            *complete, self._partial = self._partial.split("\n")
            self.lines.extend(json.loads(line) for line in complete if line.strip())
        return self.lines

    def claimed(self) -> list[str]:
        return [line["claimed"] for line in self.read() if "claimed" in line]

    def resulted(self) -> list[dict]:
        return [line for line in self.read() if "resulted" in line]

    def kill(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:
                pass


def lease_row(database_url: str) -> tuple[str | None, object] | None:
    """(holder, expires_at) of the sweeper lease, read straight from the database."""
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT holder, expires_at FROM leases WHERE name = 'sweeper'")
            return cur.fetchone()
    finally:
        conn.close()


def holder_pid(holder: str | None) -> int | None:
    """The pid inside a lease holder "<host>:<pid>:<random>"."""
    if not holder:
        return None
    parts = holder.split(":")
    return int(parts[-2])
