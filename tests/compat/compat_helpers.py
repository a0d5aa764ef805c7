"""Helpers for the compat tests: Node workers/callers from tests/node, and the HTTP API from Python."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import httpx

from support import postgres
from support.node import NODE_DIR, run_node, start_node
from support.server import ControlPlane
from support.waiting import wait_until

WORKER = NODE_DIR / "compat_worker.mjs"
CALLER = NODE_DIR / "compat_caller.mjs"


@contextmanager
def serving(database: str | None, env: dict | None = None):
    """A real control-plane for a test module: on a new PostgreSQL database named after `database`,
    or on SQLite when it is None; stopped, and its database dropped, afterwards."""
    url = postgres.create_database(database) if database else None
    server = ControlPlane(database_url=url, env=env or {}).start()
    try:
        yield server
    finally:
        server.stop()
        if url:
            try:
                postgres.drop_database(url)
            except Exception:  # a test's leftover connection: the server's cleanup removes it
                pass


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


class Worker:
    """compat_worker.mjs in the background; always killed by stop() (tests call it in teardown)."""

    def __init__(self, cp, cluster: dict, service: str, name: str = "worker", extra_env: dict | None = None):
        env = {"DIFFERENTIAL_API_SECRET": cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url,
               "SERVICE": service, "WORKER_NAME": name, **(extra_env or {})}
        self.name = name
        self.proc = start_node(WORKER, env=env)

    def log(self) -> str:
        try:
            return Path(self.proc.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def events(self) -> list[dict]:
        return json_lines(self.log())

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "worker event") -> dict:
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            return next((e for e in self.events() if predicate(e)), None)
        try:
            return wait_until(check, timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.log()[-3000:]}") from None

    def ready(self, timeout: float = 30.0) -> "Worker":
        self.wait_for(lambda e: e.get("ready"), timeout, what=f"worker {self.name} ready")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        if self.proc.log_path:
            try:
                os.unlink(self.proc.log_path)
            except OSError:
                pass


def caller_env(cp, cluster: dict, service: str, **extra: str) -> dict:
    return {"DIFFERENTIAL_API_SECRET": cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url,
            "SERVICE": service, **{k: str(v) for k, v in extra.items()}}


def run_caller(cp, cluster: dict, service: str, scenario: str, timeout: float = 60.0, **extra) -> dict:
    """Run one compat_caller.mjs scenario to completion and return its JSON line."""
    r = run_node(CALLER, env=caller_env(cp, cluster, service, **extra), args=[scenario], timeout=timeout)
    lines = [x for x in json_lines(r.stdout) if x.get("scenario") == scenario]
    assert r.returncode == 0 and lines, (
        f"caller {scenario} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return lines[-1]


def start_caller(cp, cluster: dict, service: str, scenario: str, **extra) -> subprocess.Popen:
    return start_node(CALLER, env=caller_env(cp, cluster, service, **extra), args=[scenario])


def cluster_headers(cluster: dict, machine_id: str = "pytest") -> dict:
    return {"Authorization": f"Basic {cluster['apiSecret']}", "x-machine-id": machine_id}


def get_job(cp, cluster: dict, job_id: str, ttl_ms: int = 0) -> dict:
    r = httpx.get(f"{cp.url}/jobs/{job_id}", params={"ttl": ttl_ms}, headers=cluster_headers(cluster),
                  timeout=ttl_ms / 1000 + 10)
    assert r.status_code == 200, r.text
    return r.json()
