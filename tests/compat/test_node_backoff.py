"""The published SDK's caller (@differentialhq/core 3.18.0, unchanged) calling a function whose
Python worker declares a back-off for rejections (issue 14): the caller sees the intermediate
rejections as a job still pending, gets the value of the attempt that resolves, and the last
rejection when the attempts run out. On PostgreSQL and SQLite."""
from __future__ import annotations

import itertools
import threading
import time
import uuid

import httpx
import pytest

from differential import Backoff, Differential
from support.node import NODE_DIR, run_node

from compat_helpers import json_lines, serving
from support.waiting import wait_until

pytestmark = [pytest.mark.node, pytest.mark.slow]


@pytest.fixture(params=["postgres", "sqlite"])
def cp(request, node_sdk):
    with serving("backoff" if request.param == "postgres" else None, {"SWEEP_INTERVAL_SECONDS": "0.5"}) as server:
        yield server


def test_the_published_callers_call_is_retried_by_its_functions_back_off(cp):
    cluster = cp.create_cluster(f"backoff-{uuid.uuid4().hex[:8]}")
    service = f"svc{uuid.uuid4().hex[:10]}"
    stamps: dict[str, list[float]] = {"flaky": [], "alwaysFails": []}
    lock = threading.Lock()

    def attempt(name: str) -> int:
        with lock:
            stamps[name].append(time.monotonic())
            return len(stamps[name])

    d = Differential(cluster["apiSecret"], endpoint=cp.url)
    svc = d.service(service)

    @svc.function(retry=Backoff(3, initial_delay=0.3, factor=2))
    def flaky(tag: str) -> str:
        n = attempt("flaky")
        if n < 3:
            raise ValueError(f"{tag} failed on attempt {n}")
        return f"{tag} resolved on attempt {n}"

    @svc.function(name="alwaysFails", retry=Backoff(2, initial_delay=0.2))
    def always_fails(tag: str) -> str:
        raise ValueError(f"{tag} failed on attempt {attempt('alwaysFails')}")

    svc.start()

    def stored():  # the functions' defaults apply to calls made once the definition is stored
        r = httpx.get(f"{cp.url}/clusters/{cluster['id']}/service/{service}", headers=cp.management_headers)
        return r.status_code == 200 and len(r.json()["definition"]["functions"]) == 2

    try:
        wait_until(stored, timeout=15, what="the service definition")
        r = run_node(NODE_DIR / "backoff_caller.mjs", timeout=60,
                     env={"DIFFERENTIAL_API_SECRET": cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url,
                          "SERVICE": service})
        lines = [x for x in json_lines(r.stdout) if x.get("scenario") == "backoff"]
        assert r.returncode == 0 and lines, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
        out = lines[-1]
    finally:
        assert svc.stop(timeout=10)
        d.close()
    assert out.get("value") == "node resolved on attempt 3", out
    assert out["threw"] and out["isError"] and "node failed on attempt 2" in out["message"], out
    assert len(stamps["flaky"]) == 3 and len(stamps["alwaysFails"]) == 2
    gaps = [b - a for a, b in itertools.pairwise(stamps["flaky"])]
    assert 0.28 <= gaps[0] < 1.3 and 0.58 <= gaps[1] < 1.6, gaps  # 0.3 s, then 0.6 s
