"""Many claimers at once: every job is handed out exactly once per attempt, none is lost.

In-process threads on both backends, then several OS processes against a real gunicorn server
with two workers on PostgreSQL (so claims race across processes and connections).
"""
from __future__ import annotations

import collections
import concurrent.futures
import subprocess
import sys
import textwrap
import threading

import httpx

from cp_helpers import Api
from support.server import ControlPlane

JOBS = 300


def _drain(api: Api, cluster: dict, machine: str, claimed: list, stop_after_empty: int = 3) -> None:
    empty = 0
    while empty < stop_after_empty:
        jobs = api.claim(cluster, machine=machine, limit=7, ttl=0)
        if not jobs:
            empty += 1
            continue
        empty = 0
        for job in jobs:
            claimed.append((job["id"], machine))
            api.result(cluster, job["id"], machine=machine, value=job["id"])


def test_threads_claim_each_job_exactly_once(api):
    c = api.new_cluster()
    ids = [api.call(c) for _ in range(JOBS)]
    claimed: list = []
    threads = [threading.Thread(target=_drain, args=(Api(api.app), c, f"m{i}", claimed)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    counts = collections.Counter(job_id for job_id, _ in claimed)
    assert sorted(counts) == sorted(ids), "every job claimed"
    assert max(counts.values()) == 1, "no job handed out twice"
    statuses = [api.status(c, i) for i in ids]
    assert all(s["status"] == "success" and s["result"] == s["id"] for s in statuses)
    assert len({m for _, m in claimed}) > 1, "the work was actually shared"


CLAIMER = textwrap.dedent("""
    import json, sys, httpx
    url, secret, machine = sys.argv[1:4]
    headers = {"Authorization": "Basic " + secret, "x-machine-id": machine}
    claimed, empty = [], 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        while empty < 3:
            r = http.post("/jobs-request", json={"service": "svc", "limit": 5, "ttl": 200})
            r.raise_for_status()
            jobs = r.json()
            empty = 0 if jobs else empty + 1
            for job in jobs:
                claimed.append(job["id"])
                res = http.post(f"/jobs/{job['id']}/result", json={"result": machine, "resultType": "resolution"})
                assert res.status_code == 204, res.text
    print(json.dumps(claimed))
""")


def test_processes_claim_each_job_exactly_once_through_gunicorn(fresh_pg_url):
    with ControlPlane(fresh_pg_url, env={"WEB_CONCURRENCY": "2"}) as cp:
        cluster = cp.create_cluster()
        headers = {"Authorization": f"Basic {cluster['apiSecret']}"}
        with httpx.Client(base_url=cp.url, headers=headers, timeout=30) as http:
            def create(_):
                r = http.post("/jobs", json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
                assert r.status_code == 201, r.text
                return r.json()["id"]

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(create, range(JOBS)))
            procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, cp.url, cluster["apiSecret"], f"proc-{i}"],
                                      stdout=subprocess.PIPE, text=True) for i in range(4)]
            outputs = [p.communicate(timeout=180)[0] for p in procs]
            assert all(p.returncode == 0 for p in procs)
            import json

            per_process = [json.loads(out) for out in outputs]
            counts = collections.Counter(i for claimed in per_process for i in claimed)
            assert sorted(counts) == sorted(ids), "every job claimed"
            assert max(counts.values()) == 1, "no job handed out twice"
            assert sum(1 for claimed in per_process if claimed) > 1, "the work was actually shared"
            r = http.post("/batch-jobs-status-request", json={"jobIds": ids, "ttl": 0})
            assert sorted(row["id"] for row in r.json() if row["status"] == "success") == sorted(ids)

