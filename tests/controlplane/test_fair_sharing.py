"""One cluster's long polls must not starve another cluster or the health check (issue 11 point 3,
audit H3), on a real gunicorn server (PostgreSQL) as the suite starts it.

Cluster A sends many long polls at once (claims, status polls and batch status polls, from 100
machines, raw sockets on one asyncio loop) and holds them, while cluster B creates jobs, makes a
whole call (create, a worker's claim, its result, the status) and `/live` is asked, each of which
must answer within a second. Every one of A's polls must still get a 200: past A's budget they
answer with what they have. One worker process, as `make run` has: the budgets are per process,
and 300 polls are far more than its 24 threads.

Before the budgets: with 300 of A's polls at ttl 20 s, `/live` and B's create took 19.3 s; with
10,000 at ttl 1 s, both timed out at 40 s (audit H3).
"""
from __future__ import annotations

import asyncio
import json
import pathlib
import resource
import threading
import time

import httpx
import pytest

from support import node
from support.server import ControlPlane

PROBE_SECONDS = 4.0
LIMIT_SECONDS = 1.0  # the bound for B's requests and /live
A_TTL_MS = 10_000


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"needs {needed} open files (RLIMIT_NOFILE hard limit {hard})")


def _request(method: str, path: str, secret: str, machine: str | None, body: dict | None = None) -> bytes:
    payload = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {secret}", "Connection: close"]
    if machine:
        head.append(f"x-machine-id: {machine}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def _a_polls(secret: str, job_id: str, n: int) -> list[bytes]:
    """A mix of the three long polls, from 100 machines of cluster A."""
    polls = []
    for i in range(n):
        machine = f"a-machine-{i % 100}"
        kind = i % 3
        if kind == 0:
            polls.append(_request("POST", "/jobs-request", secret, machine,
                                  {"service": "a-idle", "limit": 10, "ttl": A_TTL_MS, "functions": [{"name": "fn"}]}))
        elif kind == 1:
            polls.append(_request("GET", f"/jobs/{job_id}?ttl={A_TTL_MS}", secret, machine))
        else:
            polls.append(_request("POST", "/batch-jobs-status-request", secret, machine,
                                  {"jobIds": [job_id], "ttl": A_TTL_MS}))
    return polls


async def _one_poll(port: int, request: bytes) -> int:
    for attempt in range(20):  # a full accept backlog refuses a connection now and then: try again
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.1 * (attempt + 1))
    else:
        return -1
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=120)  # Connection: close: to EOF
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -2
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return -3
    finally:
        writer.close()


class _Holder:
    """Sends A's polls, each on a connection of its own, from a thread of its own."""

    def __init__(self, port: int, polls: list[bytes]) -> None:
        self.port, self.polls = port, polls
        self.sent = threading.Event()
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _send(self, request: bytes) -> None:
        self.statuses.append(await _one_poll(self.port, request))

    async def _run(self) -> None:
        tasks = []
        for i, request in enumerate(self.polls):
            tasks.append(asyncio.ensure_future(self._send(request)))
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the connections of this wave start
        self.sent.set()
        await asyncio.gather(*tasks)

    def __enter__(self) -> "_Holder":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=A_TTL_MS / 1000 + 60)


def _probe_b(cp: ControlPlane, secret: str, seconds: float) -> list[tuple[str, int, float]]:
    """B's requests, one after another for `seconds`: (what, status, seconds it took)."""
    timings: list[tuple[str, int, float]] = []
    headers = {"Authorization": f"Basic {secret}", "x-machine-id": "b-machine"}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=cp.url, timeout=30.0) as http:

        def timed(what, method, path, **kw):
            started = time.monotonic()
            r = http.request(method, path, **kw)
            timings.append((what, r.status_code, time.monotonic() - started))
            return r

        while time.monotonic() < deadline:
            timed("live", "GET", "/live")
            timed("create", "POST", "/jobs", headers=headers,
                  json={"service": "b-other", "targetFn": "fn", "targetArgs": "kA=="})
            job = timed("call: create", "POST", "/jobs", headers=headers,
                        json={"service": "b-svc", "targetFn": "fn", "targetArgs": "kA=="}).json()["id"]
            claimed = timed("call: claim", "POST", "/jobs-request", headers=headers,
                            json={"service": "b-svc", "limit": 1, "ttl": 5000, "functions": [{"name": "fn"}]}).json()
            for row in claimed:
                timed("call: result", "POST", f"/jobs/{row['id']}/result", headers=headers,
                      json={"result": "oA==", "resultType": "resolution", "functionExecutionTime": 1})
            status = timed("call: status", "GET", f"/jobs/{job}?ttl=5000", headers=headers).json()
            timings.append(("call: finished", 200 if status["status"] == "success" else 0, 0.0))
            time.sleep(0.1)
    return timings


def _starve(cp: ControlPlane, n: int) -> tuple[list[tuple[str, int, float]], list[int]]:
    a, b = cp.create_cluster("A"), cp.create_cluster("B")
    a_job = httpx.post(cp.url + "/jobs", headers={"Authorization": f"Basic {a['apiSecret']}"}, timeout=10,
                       json={"service": "a-nobody", "targetFn": "fn", "targetArgs": "kA=="}).json()["id"]
    _probe_b(cp, b["apiSecret"], 0.1)  # B's machine, service and connection exist before A starts
    with _Holder(cp.port, _a_polls(a["apiSecret"], a_job, n)) as holder:
        assert holder.sent.wait(60)
        time.sleep(1.0)  # A's polls are in: parked, or answered past A's budget
        timings = _probe_b(cp, b["apiSecret"], PROBE_SECONDS)
    return timings, holder.statuses


def _check(timings, a_statuses, n):
    slow = [t for t in timings if t[2] > LIMIT_SECONDS]
    wrong = [t for t in timings if t[1] not in (200, 201, 204)]
    worst = max(timings, key=lambda t: t[2])
    print(f"B: {len(timings)} requests, slowest {worst}; A: {len(a_statuses)} answers; B took",
          sorted(round(t[2], 2) for t in timings))
    assert not wrong, f"B's requests failed: {wrong[:5]}"
    assert not slow, f"{len(slow)}/{len(timings)} of B's requests took over {LIMIT_SECONDS} s: {slow[:5]}"
    assert {w for w, _, _ in timings} >= {"live", "create", "call: create", "call: claim", "call: result",
                                          "call: status", "call: finished"}, timings
    assert len(a_statuses) >= n
    assert set(a_statuses) == {200}, f"A's polls: {sorted(set(a_statuses))}"
    return worst


@pytest.fixture
def server(fresh_pg_url):
    _raise_open_files(12_000)
    with ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "1"}) as cp:
        yield cp


def test_300_polls_held_by_one_cluster_leave_the_others_and_live_alone(server):
    timings, a_statuses = _starve(server, 300)
    _check(timings, a_statuses, 300)


# With the budgets, A's 10,000 polls all answer 200 and no thread is left without work, but
# Plain gthread hands requests to its threads in arrival order: B's requests and /live waited for
# the thousands of A's requests that came before them (13 s measured). app/server's worker
# dispatches ready requests fairly per credential, with a lane of its own for /live.
def test_10000_polls_of_one_cluster_leave_the_others_and_live_alone(server):
    timings, a_statuses = _starve(server, 10_000)
    _check(timings, a_statuses, 10_000)


def _access_log_count(path, request_line: str) -> int:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if f'"{request_line} HTTP/1.1" 200' in line and '"node"' in line)


def test_the_published_sdk_past_its_budget_gets_its_answers_without_looping(fresh_pg_url, node_sdk, tmp_path):
    """Over budget, the published SDK's polls get what they have, after a pause: its calls work, and
    its results poller (which asks again 100 ms after an answer) sends about one poll a second."""
    log = tmp_path / "access.log"
    env = {"WEB_CONCURRENCY": "1", "LONG_POLLS_PER_CLUSTER": "8", "LONG_POLLS_PER_MACHINE": "1",
           "LONG_POLL_PAUSE_SECONDS": "1", "ACCESS_LOG": str(log)}
    with ControlPlane(fresh_pg_url, env=env) as cp:
        a = cp.create_cluster("A")
        hog = [_request("POST", "/jobs-request", a["apiSecret"], f"hog-{i}",
                        {"service": "hog", "limit": 1, "ttl": 20_000, "functions": [{"name": "fn"}]}) for i in range(8)]
        holder = _Holder(cp.port, hog)
        holder.thread.start()  # A's whole budget, parked for 20 s (answered when the server stops)
        assert holder.sent.wait(10)
        time.sleep(1.0)
        sdk_env = {"DIFFERENTIAL_API_SECRET": a["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url, "SERVICE": "fair"}
        worker = node.start_node(node.NODE_DIR / "compat_worker.mjs", env={**sdk_env, "WORKER_NAME": "w"})
        try:
            worker_log = pathlib.Path(worker.log_path)
            deadline = time.monotonic() + 30
            while '"ready":true' not in worker_log.read_text(errors="replace"):
                assert worker.poll() is None and time.monotonic() < deadline, worker_log.read_text()[-2000:]
                time.sleep(0.1)
            r = node.run_node(node.NODE_DIR / "compat_caller.mjs", env=sdk_env, args=["values"], timeout=60)
            assert r.returncode == 0 and '"greet":"Hello, Ada!"' in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
            before = _access_log_count(log, "POST /batch-jobs-status-request")
            started = time.monotonic()
            r = node.run_node(node.NODE_DIR / "compat_caller.mjs", env={**sdk_env, "SLOW_MS": "4000"},
                              args=["slow"], timeout=60)
            took = time.monotonic() - started
            assert r.returncode == 0 and '"result":1' in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
            time.sleep(0.5)  # the access log is written after each answer
            polls = _access_log_count(log, "POST /batch-jobs-status-request") - before
        finally:
            worker.kill()
            worker.wait(timeout=10)
    holder.thread.join(timeout=30)
    assert set(holder.statuses) == {200}
    print(f"the published SDK's results poller sent {polls} polls in {took:.1f} s of a 4 s call, over budget")
    # Measured: 6 polls in 6.1 s; answered at once (a 0.01 s pause), 20 in the same 6.1 s.
    assert 2 <= polls <= 2 * took, polls
