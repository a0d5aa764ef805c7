"""The console's job explorer with 100,000 jobs in one cluster (issue 16): how fast its pages answer.

    .venv/bin/python bench/console_jobs.py [--jobs 100000] [--requests 40]

Starts a throwaway PostgreSQL 15 (tests/support/postgres.py) and the real gunicorn control-plane
on it (tests/support/server.py, LOG_LEVEL=warning, the sweeper off so the rows stay as written),
creates a cluster, and fills it with N jobs through the jobs table's own columns in batches of
2,000 rows: 6 services of 4 functions, spread over 7 days, mostly success, some failure, cancelled,
pending, running and scheduled. Then it signs in to the console as a browser would and times
signed-in GETs of the explorer, each `--requests` times one after another: the first page, an
older page (by the first page's cursor), filters (a status, a service and function, a rare
function alone, a created-time window in the middle of the week) and the search by id (found: a
303 to the job; missing: the explorer with a 404). Prints p50/p95/max in milliseconds, a markdown
table, and the EXPLAIN of the slowest walk.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app import create_app, db, sealing, settings  # noqa: E402
from app.engine import ids  # noqa: E402
from support import postgres  # noqa: E402
from support.server import ControlPlane  # noqa: E402

_COLUMNS = ("cluster_id", "id", "service", "target_fn", "target_args", "status", "result_type", "attempts_allowed",
            "attempt", "timeout_seconds", "created_at", "claimed_at", "resulted_at", "execution_time_ms",
            "predictive_retries", "result", "reason")
BATCH = 2000
SERVICES = [f"svc{i}" for i in range(6)]
FUNCTIONS = [f"fn{i}" for i in range(4)]
ARGS = "kqNBZGEC"  # ["Ada", 2]
RESULT = "gaJva8M="  # {"ok": true}


def _status(i: int) -> tuple[str, str | None]:
    if i % 50 == 0:
        return "failure", None
    if i % 97 == 0:
        return "cancelled", "rejection"
    if i % 1000 == 1:
        return "pending", None
    if i % 1000 == 2:
        return "running", None
    if i % 5000 == 3:
        return "scheduled", None
    return "success", "resolution" if i % 13 else "rejection"


def fill(cluster_id: str, n: int, start: dt.datetime, rare_every: int) -> list[str]:
    """N jobs over 7 days from `start`, oldest first (seq follows created_at); returns their ids."""
    step = dt.timedelta(days=7) / n
    made, rows = [], []
    for i in range(1, n + 1):
        created = start + i * step
        status, result_type = _status(i)
        finished = status in ("success", "failure", "cancelled")
        fn = "rare" if i % rare_every == 0 else FUNCTIONS[i % len(FUNCTIONS)]
        job_id = ids.job_id()
        made.append(job_id)
        rows.append((cluster_id, job_id, SERVICES[i % len(SERVICES)], fn, ARGS, status, result_type, 4,
                     0 if status in ("pending", "scheduled") else 1, 300, created,
                     None if status in ("pending", "scheduled") else created + dt.timedelta(milliseconds=5),
                     created + dt.timedelta(milliseconds=40) if finished else None, 30 if finished else None,
                     False, RESULT if result_type else None, "cancelled by the caller" if status == "cancelled"
                     else None))
    one = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    for k in range(0, n, BATCH):
        chunk = rows[k:k + BATCH]
        sql = f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES " + ", ".join([one] * len(chunk))
        db.unit_of_work(lambda sql=sql, chunk=chunk: db.execute(sql, [v for row in chunk for v in row]))
    definitions = [(cluster_id, s, json.dumps({"name": s, "functions": [{"name": f} for f in FUNCTIONS + ["rare"]]}))
                   for s in SERVICES]
    for row in definitions:
        db.unit_of_work(lambda row=row: db.execute(
            "INSERT INTO services (cluster_id, name, definition, updated_at) VALUES (%s, %s, %s, now())", row))
    db.unit_of_work(lambda: db.execute("ANALYZE jobs"), transaction=False)
    return made


def sign_in(base: str, secret: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = client.post("/console/sign-in", data={"secret": secret, "csrf_token": token, "next": "/console/"},
                    headers={"Origin": base})
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return client


def timed(client: httpx.Client, path: str, requests: int, expect: int) -> dict:
    client.get(path)  # warm: the first request of a kind pays for imports and plans
    samples = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == expect, (path, r.status_code, r.text[:500])
    samples.sort()
    return {"p50": statistics.median(samples), "p95": samples[max(0, int(len(samples) * 0.95) - 1)],
            "max": samples[-1], "rows": len(re.findall(r'<tr><td class="mono"><a href=', r.text))}


def explain(cluster_id: str, sql_filter: str) -> str:
    q = (f"EXPLAIN (ANALYZE, BUFFERS) SELECT seq, id FROM jobs WHERE cluster_id = %s {sql_filter} "
         "ORDER BY seq DESC LIMIT 51")
    rows = db.unit_of_work(lambda: db.execute(q, (cluster_id,)).fetchall(), transaction=False)
    return "\n".join(row[0] for row in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=40, help="timed GETs of each page")
    p.add_argument("--rare-every", type=int, default=2000, help="one job in this many calls the function 'rare'")
    a = p.parse_args()

    postgres.ensure_server()
    url = postgres.create_database("benchconsole")
    key = sealing.new_key()  # the bench process opens the same database, so it needs the server's key
    cp = ControlPlane(url, env={"LOG_LEVEL": "warning", "SWEEPER_ENABLED": "false", "SECRETS_KEY": key}).start()
    app = None
    try:
        cluster = cp.create_cluster("console bench")
        cid = cluster["id"]
        app = create_app(settings.load({"DATABASE_URL": url, "MANAGEMENT_SECRET": cp.management_secret,
                                        "DIFFERENTIAL_DATA_DIR": tempfile.mkdtemp(), "SWEEPER_ENABLED": "false",
                                        "SECRETS_KEY": key}))
        start = dt.datetime.utcnow().replace(microsecond=0) - dt.timedelta(days=7, hours=1)
        t0 = time.perf_counter()
        made = fill(cid, a.jobs, start, a.rare_every)
        print(f"filled {a.jobs:,} jobs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        logging.getLogger("httpx").setLevel(logging.WARNING)  # create_app logs at INFO: not a line per GET
        client = sign_in(cp.url, cp.management_secret)
        jobs = f"/console/clusters/{cid}/jobs"
        first = client.get(jobs)
        older = re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1).replace("&amp;", "&")
        window_from = (start + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
        window_to = (start + dt.timedelta(days=3, hours=6)).strftime("%Y-%m-%dT%H:%M")
        cases = [
            ("first page", jobs, 200),
            ("older page (cursor)", older, 200),
            ("status=failure", jobs + "?status=failure", 200),
            ("status=running,pending", jobs + "?status=running&status=pending", 200),
            ("service=svc2&function=fn2", jobs + "?service=svc2&function=fn2", 200),
            (f"function=rare (1 in {a.rare_every:,})", jobs + "?function=rare", 200),
            ("created 6 h window, 3 days back", jobs + f"?from={window_from}&to={window_to}", 200),
            ("search by id, found (303)", jobs + f"?id={made[len(made) // 2]}", 303),
            ("search by id, missing (404)", jobs + "?id=01NOSUCHJOB0000000000000000", 404),
        ]
        results = []
        for label, path, expect in cases:
            res = timed(client, path, a.requests, expect)
            results.append((label, res))
            print(f"  {label}: p50 {res['p50']:.1f} ms, p95 {res['p95']:.1f} ms", file=sys.stderr)
        print(f"\n{a.jobs:,} jobs in one cluster, {a.requests} signed-in GETs each, one after another\n")
        print("| page | rows | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|")
        for label, res in results:
            print(f"| {label} | {res['rows']} | {res['p50']:.1f} | {res['p95']:.1f} | {res['max']:.1f} |")
        print("\nThe rare function's walk (EXPLAIN ANALYZE of admin.page_query's shape):\n")
        print(explain(cid, "AND target_fn = 'rare'"))
        client.close()
    finally:
        if app is not None:
            app.extensions["differential"].close()
        cp.stop()
        try:
            postgres.drop_database(url)
        except Exception:  # noqa: BLE001  (a throwaway database; the server goes at exit anyway)
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
