"""Two control-plane processes on one database, two gunicorn workers each: while the maintenance
leader's fold moves the rollup mark past a known mix of calls, every metrics read on either
replica counts the mix exactly (the tail before the fold, rollups after it, never twice)."""
from __future__ import annotations

import time

import psycopg2
import pytest

from faultkit import Wire, b64, wait_until
from support.server import ControlPlane

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(150)]

ENV = {"WEB_CONCURRENCY": "2", "SWEEP_INTERVAL_SECONDS": "0.3"}


def mark_and_rollups(database_url: str) -> tuple[int | None, int]:
    conn = psycopg2.connect(database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (SELECT through_ms FROM rollup_marks WHERE name = 'jobs'),"
                        " (SELECT COALESCE(SUM(calls), 0) FROM metric_rollups)")
            return cur.fetchone()
    finally:
        conn.close()


def test_metrics_read_on_either_replica_while_the_leader_folds(fresh_pg_url):
    a = ControlPlane(fresh_pg_url, env=ENV)
    b = ControlPlane(fresh_pg_url, management_secret=a.management_secret, env=ENV)
    wires = []
    try:
        a.start()
        b.start()
        cluster = a.create_cluster()
        wa, wb = Wire(a.url, cluster, a.management_secret), Wire(b.url, cluster, a.management_secret)
        wires = [wa, wb]
        mix = {"resolution": 5, "rejection": 3}
        for i, (kind, n) in enumerate(mix.items()):
            for k in range(n):
                wire = wires[(i + k) % 2]  # created, claimed and finished on either replica
                job_id = wire.call(fn=kind)
                [job] = wires[(i + k + 1) % 2].claim(f"m{k}")
                assert job["id"] == job_id
                wire.result(job_id, f"m{k}", b64(k), kind=kind)
        finished_ms = int(time.time() * 1000)

        def counts(wire: Wire) -> dict[str, int]:
            r = wire.http.get(f"/clusters/{cluster['id']}/metrics", headers=wire.mgmt,
                              params={"bucketSeconds": 60})
            assert r.status_code == 200, r.text
            return {f["function"]: f["summary"]["calls"][f["function"]] for f in r.json()["functions"]}

        assert counts(wa) == counts(wb) == mix  # at once: the tail
        reads = 0
        # The fold takes what finished 30 s ago and more; read both replicas until it has it all.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for wire in wires:
                assert counts(wire) == mix
                reads += 1
            mark, folded = mark_and_rollups(fresh_pg_url)
            if mark is not None and mark > finished_ms and folded == sum(mix.values()):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the fold did not pass the mix in 90 s: {mark_and_rollups(fresh_pg_url)}")
        assert wait_until(lambda: counts(wa) == counts(wb) == mix, 5)  # now from the rollups alone
        assert reads > 20
    finally:
        for w in wires:
            w.close()
        a.stop()
        b.stop()
