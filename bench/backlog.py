"""A deep backlog: does a queue of N pending jobs in one service slow anyone down? (issue 17, item 4)

PostgreSQL queues fall over on deep backlogs: dead tuples pile up in the claim index, plans flip on
big tables, maintenance scans grow with the table. This command measures the same load on an empty
queue, beside a backlog of N pending jobs, and again after the backlog was drained and pruned:

1. baseline: `--busy-services` services (10) share a steady `--busy-rate` of calls (harness workers
   and callers), while a measured service gets `--rate` calls/s; per service: calls/s, latency
   p50/p99, create -> claimed, and the time of each `/jobs-request` that returned jobs;
2. fill: `--jobs` plain creates (POST /jobs, `--fill-connections` in flight, so they share the group
   commit) into one service with no worker; jobs/s overall and per tenth of the fill, beside the
   same create-only burst of `--ref-jobs` into an empty queue (done in stage 1);
3. backlog: stage 1 again beside the backlog (what N pending rows cost everyone else), then once
   more with one worker claiming from the backlog too (`/jobs-request`, limit 100, each claim
   answered before the next): p50/p99 of those claims ("backlog_claims");
4. drain: `--drain-workers` workers claim and answer the rest as fast as it goes; jobs/s;
5. next run: once pruning (the control-plane's own sweeper, `--retention-seconds`) removed the
   drained jobs or `--prune-wait` passed, and autovacuum (as configured by default) had its
   chance (`--settle`), stage 1 once more.

At each stage it records, for `jobs` (each index by name) and the other hot tables, the relation,
index and total sizes, live and dead tuples and the last (auto)vacuum/analyze, and EXPLAIN (ANALYZE,
BUFFERS) of the claim statement as the control-plane builds it (statements.PostgresDialect, run
in a transaction that is rolled back), of the backlog service's claim and of the prune's and the
sweeper's selects. PostgreSQL keeps its default durability (`--unsafe-pg` turns it off).

    .venv/bin/python bench/backlog.py                              # 1,000,000 jobs (a quiet machine)
    .venv/bin/python bench/backlog.py --jobs 20000 --duration 20   # reduced: about 3 minutes
    .venv/bin/python bench/backlog.py --jobs 50000 --duration 30 --retention-seconds 20 --prune-wait 240

Prints a markdown table and writes bench/results/backlog-<timestamp>.json with every figure, the
table statistics and plans of each stage, the options, `postgres_durable`, the machine and the commit.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import harness  # noqa: E402
import psutil  # noqa: E402
import stack as bench_stack  # noqa: E402
from harness import Options, ProcSampler, Run, pct  # noqa: E402
from rawhttp import RawClient  # noqa: E402

HOT_TABLES = ("jobs", "events", "machines", "services", "workers", "metric_rollups")
BACKLOG_SERVICE = "backlog"


# --- a harness run that times its claims ---------------------------------------------------------

class TimedRun(Run):
    """harness.Run whose workers time each /jobs-request that returned jobs, and note when each job
    was claimed (create -> claimed is read against Run.started once the create answered)."""

    def __init__(self, *args, service: str | None = None, answer_first: bool = False, **kw):
        super().__init__(*args, **kw)
        if service is not None:
            self.service = service
        # answer_first: a worker posts the results of one claim before it polls again (as an SDK
        # worker with bounded concurrency does), so what it claimed never piles up as running.
        self.answer_first = answer_first
        self.worker_tasks: list[asyncio.Task] = []
        self.claim_ms: list[float] = []  # one per /jobs-request that returned jobs
        self.claim_sizes: list[int] = []
        self.claimed_at: dict[str, float] = {}
        self.results_posted = 0

    async def worker(self, idx: int) -> None:
        headers = {"authorization": self.auth, "x-machine-id": f"bench-w{idx}-{self.tag}"}
        body = {"limit": self.opts.claim_batch, "ttl": self.opts.worker_ttl_ms, "service": self.service,
                "functions": [{"name": harness.SERVICE_FN}]}
        while not self.stop.is_set():  # bounded: the stage sets stop at its end
            t0 = time.monotonic()
            try:
                self.requests["jobs-request"] += 1
                status, data = await self.worker_clients[idx].post("/jobs-request", body, headers)
            except Exception as exc:  # transport errors
                self._error("jobs-request", type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            t1 = time.monotonic()
            if status != 200:
                self._error("jobs-request", status)
                await asyncio.sleep(0.05)
                continue
            jobs = json.loads(data)
            if jobs:
                self.claim_ms.append((t1 - t0) * 1000)
                self.claim_sizes.append(len(jobs))
            posts = []
            for job in jobs:
                self.executed[job["id"]] += 1
                self.claimed_at.setdefault(job["id"], t1)
                posts.append(self._spawn(self.post_result(idx, job, headers)))
            if self.answer_first and posts:
                await asyncio.gather(*posts, return_exceptions=True)

    async def start(self) -> None:
        for i in range(self.opts.workers):
            self.worker_tasks.append(self._spawn(self.worker(i)))
        self._spawn(self.status_supervisor())

    async def finish(self) -> None:
        """Stop polling, let each worker answer what it claimed (bounded), then shut down: a poll
        cut off mid-claim would leave its jobs running until the sweeper's timeout."""
        self.stop.set()
        self.kick.set()
        live = [t for t in self.worker_tasks if not t.done()]
        if live:
            await asyncio.wait(live, timeout=self.opts.worker_ttl_ms / 1000 + 15)
        await self.shutdown()

    async def post_result(self, idx: int, job: dict, headers: dict) -> None:
        await super().post_result(idx, job, headers)
        self.results_posted += 1

    def create_to_claim_ms(self) -> list[float]:
        return [(t - self.started[j]) * 1000 for j, t in self.claimed_at.items() if j in self.started]


def _lat(values: list[float]) -> dict:
    return {"n": len(values), "p50": _r(pct(values, 50)), "p99": _r(pct(values, 99)),
            "max": _r(max(values) if values else None)}


def _r(v):
    return None if v is None else round(v, 2)


# --- stages ---------------------------------------------------------------------------------------

async def _steady(run: TimedRun, rate: float, duration: float) -> int:
    """Calls at `rate` for `duration` s on an absolute schedule; returns the failed creates."""
    t0 = time.monotonic()
    creators = []
    for i in range(int(rate * duration)):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        creators.append(asyncio.create_task(run.create(i)))
    ids = await asyncio.gather(*creators)
    return sum(1 for i in ids if i is None)


def _summary(run: TimedRun, calls: int, elapsed: float, failed: int) -> dict:
    out = run.outcome(run.service, calls, elapsed, failed).summary()
    out.pop("requests", None)
    return {"service": run.service, "calls": calls, "completed": out["completed"], "lost": out["lost"],
            "duplicated": out["duplicated"], "mismatched": out["mismatched"], "create_failed": failed,
            "errors": out["errors"], "calls_per_s": out["calls_per_s"], "latency_ms": out["latency_ms"],
            "create_to_claim_ms": _lat(run.create_to_claim_ms()), "claim_request_ms": _lat(run.claim_ms)}


async def measure(a, endpoint: str, secret: str, cluster_pids: dict, *, backlog_left: int = 0) -> dict:
    """Stage 1 (3, 5): busy services + the measured service for `a.duration` s; with a backlog, one
    worker also claims from it (limit 100), answering each job."""
    tag = secrets.token_hex(3)
    busy = [TimedRun(endpoint, secret, Options(workers=1, claim_batch=100), f"busy{i}-{tag}")
            for i in range(a.busy_services)]
    measured = TimedRun(endpoint, secret, Options(workers=2, claim_batch=100), f"measured-{tag}")
    backlog = None
    if backlog_left:
        backlog = TimedRun(endpoint, secret, Options(workers=1, claim_batch=100, result_connections=16),
                           "backlogclaim", service=BACKLOG_SERVICE, answer_first=True)
    runs = busy + [measured] + ([backlog] if backlog else [])
    try:
        for r in runs:
            await r.start()
        await asyncio.sleep(0.5)  # first polls in, services registered
        cp, pg = ProcSampler(cluster_pids["cp"]).start(), ProcSampler(cluster_pids["pg"], pss_every=10**9).start()
        t0 = time.monotonic()
        per_busy = a.busy_rate / max(1, a.busy_services)
        failed = await asyncio.gather(*(_steady(r, per_busy, a.duration) for r in busy),
                                      _steady(measured, a.rate, a.duration))
        deadline = time.monotonic() + 60
        for r in busy + [measured]:
            await harness._wait_all(r, list(r.futures), deadline)
        elapsed = time.monotonic() - t0
        cp_stats, pg_stats = cp.stop(), pg.stop()
        await asyncio.sleep(0.2)
    finally:
        for r in runs:
            await r.finish()
    busy_sum = [_summary(r, int(per_busy * a.duration), elapsed, f) for r, f in zip(busy, failed, strict=False)]
    out = {
        "elapsed_s": round(elapsed, 2),
        "measured": _summary(measured, int(a.rate * a.duration), elapsed, failed[-1]),
        "busy": {
            "services": len(busy), "calls": sum(s["calls"] for s in busy_sum),
            "completed": sum(s["completed"] for s in busy_sum), "lost": sum(s["lost"] for s in busy_sum),
            "duplicated": sum(s["duplicated"] for s in busy_sum),
            "calls_per_s": round(sum(s["completed"] for s in busy_sum) / elapsed, 1),
            "latency_ms": _lat([x for r in busy for x in r.latencies]),
            "create_to_claim_ms": _lat([x for r in busy for x in r.create_to_claim_ms()]),
            "worst_service_p99_ms": max((s["latency_ms"]["p99"] or 0) for s in busy_sum),
        },
        "control_plane": cp_stats, "postgres": {"cpu_s": pg_stats.get("cpu_s")},
    }
    if backlog is not None:
        out["backlog_claim"] = {"claim_request_ms": _lat(backlog.claim_ms), "claimed": sum(backlog.claim_sizes),
                                "results_posted": backlog.results_posted, "errors": dict(backlog.errors),
                                "duplicated": sum(1 for n in backlog.executed.values() if n > 1)}
    return out


async def fill(endpoint: str, secret: str, service: str, n: int, connections: int) -> dict:
    """n plain creates into `service` (no worker), `connections` in flight; jobs/s and per tenth."""
    clients = [RawClient(*_host_port(endpoint), 8, timeout=60) for _ in range(max(1, connections // 8))]
    headers = {"authorization": f"Basic {secret}", "x-machine-id": f"bench-filler-{secrets.token_hex(3)}"}
    tag = secrets.token_hex(4)
    done_at: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0

    async def one_lane(lane: int) -> None:
        nonlocal next_i
        client = clients[lane % len(clients)]
        while next_i < n:
            i = next_i
            next_i += 1
            body = {"service": service, "targetFn": harness.SERVICE_FN, "targetArgs": harness.call_args(tag, i),
                    "callConfig": {"retryCountOnStall": 3, "predictiveRetriesOnRejection": False,
                                   "timeoutSeconds": 300}}
            try:
                status, _ = await client.post("/jobs", body, headers)
            except Exception as exc:  # transport errors: counted, not retried (the figure says so)
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if status != 201:
                errors[str(status)] = errors.get(str(status), 0) + 1
                continue
            done_at.append(time.monotonic())

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one_lane(i) for i in range(connections)))
    finally:
        for c in clients:
            await c.aclose()
    elapsed = time.monotonic() - t0
    tenths = []
    if done_at:
        step = max(1, len(done_at) // 10)
        prev = t0
        for k in range(step - 1, len(done_at), step):
            tenths.append(round(step / max(1e-9, done_at[k] - prev), 1))
            prev = done_at[k]
    return {"jobs": n, "created": len(done_at), "errors": errors, "elapsed_s": round(elapsed, 2),
            "jobs_per_s": round(len(done_at) / elapsed, 1) if elapsed else None, "jobs_per_s_by_tenth": tenths[:10]}


async def drain(endpoint: str, secret: str, service: str, expected: int, workers: int, timeout: float) -> dict:
    """Workers claim from `service` and answer every job until `expected` results are posted."""
    run = TimedRun(endpoint, secret, Options(workers=workers, claim_batch=100, result_connections=16, worker_ttl_ms=2000),
                   "drain", service=service, answer_first=True)
    t0 = time.monotonic()
    try:
        await run.start()
        end = t0 + timeout
        while run.results_posted < expected and time.monotonic() < end:
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - t0
    finally:
        await run.finish()
    return {"expected": expected, "claimed": sum(run.claim_sizes), "results_posted": run.results_posted,
            "duplicated": sum(1 for n in run.executed.values() if n > 1), "errors": dict(run.errors),
            "elapsed_s": round(elapsed, 2), "jobs_per_s": round(run.results_posted / elapsed, 1) if elapsed else None,
            "claim_request_ms": _lat(run.claim_ms)}


def _host_port(endpoint: str) -> tuple[str, int]:
    import httpx

    u = httpx.URL(endpoint)
    return u.host, u.port or 80


# --- what PostgreSQL says -------------------------------------------------------------------------

def table_stats(stk: bench_stack.Stack) -> dict:
    names = ", ".join(f"'{t}'" for t in HOT_TABLES)
    tables = {}
    for row in stk.psql(f"""
        SELECT relname, pg_relation_size(relid), pg_indexes_size(relid), pg_total_relation_size(relid),
               n_live_tup, n_dead_tup, n_mod_since_analyze, last_vacuum, last_autovacuum, last_analyze,
               last_autoanalyze, vacuum_count, autovacuum_count, autoanalyze_count
        FROM pg_stat_user_tables WHERE relname IN ({names}) ORDER BY relname"""):
        tables[row[0]] = {"table_bytes": row[1], "indexes_bytes": row[2], "total_bytes": row[3],
                          "n_live_tup": row[4], "n_dead_tup": row[5], "n_mod_since_analyze": row[6],
                          "last_vacuum": _ts(row[7]), "last_autovacuum": _ts(row[8]), "last_analyze": _ts(row[9]),
                          "last_autoanalyze": _ts(row[10]), "vacuum_count": row[11], "autovacuum_count": row[12],
                          "autoanalyze_count": row[13]}
    indexes = {}
    for name, size, scans, read, fetched in stk.psql("""
        SELECT indexrelname, pg_relation_size(indexrelid), idx_scan, idx_tup_read, idx_tup_fetch
        FROM pg_stat_user_indexes WHERE relname = 'jobs' ORDER BY indexrelname"""):
        indexes[name] = {"bytes": size, "idx_scan": scans, "idx_tup_read": read, "idx_tup_fetch": fetched}
    counts = dict(stk.psql("SELECT status, count(*) FROM jobs GROUP BY status"))
    return {"tables": tables, "jobs_indexes": indexes, "jobs_by_status": counts}


def _ts(v):
    return v.isoformat() if isinstance(v, dt.datetime) else v


def explain(stk: bench_stack.Stack, sql: str, params: tuple) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement, in a transaction rolled back (a claim writes)."""
    import psycopg2

    conn = psycopg2.connect(stk.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            text = "\n".join(r[0] for r in cur.fetchall())
        conn.rollback()
        return text
    finally:
        conn.close()


def claim_params(sql: str, cluster_id: str, service: str) -> tuple:
    """The claim's parameters, for the statement before (cluster and service once) or after the
    claim was made to walk jobs_claim (twice)."""
    where = (cluster_id, service) * sql.split("FOR UPDATE")[0].count("%s, %s")
    return (*where, 100, "explain-machine", None, None)


def plans(stk: bench_stack.Stack, cluster_id: str) -> dict:
    from app.engine import statements

    claim_sql = statements.PostgresDialect()._claim
    now_ms = int(time.time() * 1000)
    cutoff = (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=10)).isoformat(sep=" ")
    # What maintenance.Prune selects each round (peewee builds it: the same text, literal statuses).
    prune_sql = ("SELECT seq FROM jobs WHERE status IN ('success', 'failure', 'cancelled') AND resulted_at < %s"
                 " ORDER BY resulted_at LIMIT 500")
    return {
        "claim_backlog": explain(stk, claim_sql, claim_params(claim_sql, cluster_id, BACKLOG_SERVICE)),
        "claim_empty_service": explain(stk, claim_sql, claim_params(claim_sql, cluster_id, "no-such-service")),
        "prune_select": explain(stk, prune_sql, (cutoff,)),
        "stalled_select": explain(stk, statements._STALLED + " FOR UPDATE SKIP LOCKED", (now_ms, 500)),
    }


def snapshot(stk: bench_stack.Stack, cluster_id: str, stage: str) -> dict:
    return {"stage": stage, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "stats": table_stats(stk), "plans": plans(stk, cluster_id)}


def wait_for_prune(stk: bench_stack.Stack, wait: float) -> dict:
    """Poll (every 5 s, at most `wait` s) until the backlog service's finished jobs are pruned."""
    t0 = time.monotonic()
    trace = []
    while True:
        left = stk.psql(f"SELECT count(*) FROM jobs WHERE service = '{BACKLOG_SERVICE}'")[0][0]
        trace.append((round(time.monotonic() - t0, 1), left))
        if left == 0 or time.monotonic() - t0 >= wait:
            break
        time.sleep(5)
    return {"seconds": round(time.monotonic() - t0, 1), "backlog_rows_left": trace[-1][1], "trace": trace}


# --- the command ----------------------------------------------------------------------------------

def _mb(b) -> str:
    return "–" if b is None else f"{b / 2**20:.1f}"


def report(res: dict) -> str:
    lines = ["| stage | measured calls/s | p50 / p99 ms | create→claim p50 / p99 ms | busy calls/s | busy p99 ms "
             "(worst service) | backlog claim p50 / p99 ms | CP CPU s | PG CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ("baseline", "backlog", "backlog_claims", "next_run"):
        s = res["stages"].get(name)
        if not s:
            continue
        m, b = s["measured"], s["busy"]
        bc = s.get("backlog_claim", {}).get("claim_request_ms")
        bcs = "–" if not bc else f"{bc['p50']} / {bc['p99']}"
        lines.append(
            f"| {name} | {m['calls_per_s']} | {m['latency_ms']['p50']} / {m['latency_ms']['p99']} | "
            f"{m['create_to_claim_ms']['p50']} / {m['create_to_claim_ms']['p99']} | {b['calls_per_s']} | "
            f"{b['latency_ms']['p99']} ({b['worst_service_p99_ms']}) | "
            f"{bcs} | {s['control_plane'].get('cpu_s')} | "
            f"{s['postgres'].get('cpu_s')} |")
    f, r, d = res["fill"], res["ref_fill"], res["drain"]
    lines += ["", f"fill: {f['created']} of {f['jobs']} jobs in {f['elapsed_s']} s = **{f['jobs_per_s']} jobs/s** "
                  f"(by tenth: {f['jobs_per_s_by_tenth']}); the same create-only burst of {r['created']} into an "
                  f"empty queue: {r['jobs_per_s']} jobs/s",
              f"drain: {d['results_posted']} of {d['expected']} in {d['elapsed_s']} s = **{d['jobs_per_s']} jobs/s**, "
              f"claim p50/p99 {d['claim_request_ms']['p50']} / {d['claim_request_ms']['p99']} ms, "
              f"{d['duplicated']} run twice",
              f"prune after the drain: {res['prune']['backlog_rows_left']} backlog rows left after "
              f"{res['prune']['seconds']} s", ""]
    lines += ["| snapshot | jobs rows by status | jobs table MB | jobs indexes MB | jobs live / dead tuples | "
              "jobs_claim MB | events MB (dead) | jobs last autovacuum |", "|---|---|---|---|---|---|---|---|"]
    for snap in res["snapshots"]:
        st = snap["stats"]
        j = st["tables"].get("jobs", {})
        e = st["tables"].get("events", {})
        lines.append(f"| {snap['stage']} | {st['jobs_by_status']} | {_mb(j.get('table_bytes'))} | "
                     f"{_mb(j.get('indexes_bytes'))} | {j.get('n_live_tup')} / {j.get('n_dead_tup')} | "
                     f"{_mb(st['jobs_indexes'].get('jobs_claim', {}).get('bytes'))} | "
                     f"{_mb(e.get('total_bytes'))} ({e.get('n_dead_tup')}) | {j.get('last_autovacuum')} |")
    return "\n".join(lines)


async def main_async(a, stk: bench_stack.Stack, cluster: dict) -> dict:
    endpoint, secret = stk.endpoint, cluster["apiSecret"]
    pids = {"cp": stk.pids[0], "pg": stk.pg_pid}
    res: dict = {"stages": {}, "snapshots": []}
    res["snapshots"].append(snapshot(stk, cluster["id"], "empty"))
    print("1. baseline", flush=True)
    res["stages"]["baseline"] = await measure(a, endpoint, secret, pids)
    ref = f"ref-{secrets.token_hex(3)}"
    res["ref_fill"] = await fill(endpoint, secret, ref, a.ref_jobs, a.fill_connections)
    res["ref_drain"] = await drain(endpoint, secret, ref, res["ref_fill"]["created"], a.drain_workers, a.drain_timeout)
    print(f"2. fill {a.jobs}", flush=True)
    cp, pg = ProcSampler(pids["cp"]).start(), ProcSampler(pids["pg"], pss_every=10**9).start()
    res["fill"] = await fill(endpoint, secret, BACKLOG_SERVICE, a.jobs, a.fill_connections)
    res["fill"]["control_plane"], res["fill"]["postgres"] = cp.stop(), {"cpu_s": pg.stop().get("cpu_s")}
    res["snapshots"].append(snapshot(stk, cluster["id"], "filled"))
    print("3. backlog", flush=True)
    res["stages"]["backlog"] = await measure(a, endpoint, secret, pids)
    res["stages"]["backlog_claims"] = await measure(a, endpoint, secret, pids, backlog_left=res["fill"]["created"])
    res["snapshots"].append(snapshot(stk, cluster["id"], "after backlog stage"))
    left = stk.psql(f"SELECT count(*) FROM jobs WHERE service = '{BACKLOG_SERVICE}' AND status = 'pending'")[0][0]
    print(f"4. drain {left}", flush=True)
    cp, pg = ProcSampler(pids["cp"]).start(), ProcSampler(pids["pg"], pss_every=10**9).start()
    res["drain"] = await drain(endpoint, secret, BACKLOG_SERVICE, left, a.drain_workers, a.drain_timeout)
    res["drain"]["control_plane"], res["drain"]["postgres"] = cp.stop(), {"cpu_s": pg.stop().get("cpu_s")}
    res["snapshots"].append(snapshot(stk, cluster["id"], "drained"))
    print("5. prune, settle, next run", flush=True)
    res["prune"] = await asyncio.to_thread(wait_for_prune, stk, a.prune_wait)
    await asyncio.sleep(a.settle)
    res["snapshots"].append(snapshot(stk, cluster["id"], "pruned and settled"))
    res["stages"]["next_run"] = await measure(a, endpoint, secret, pids)
    res["snapshots"].append(snapshot(stk, cluster["id"], "end"))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1_000_000, help="pending jobs in the backlog service")
    p.add_argument("--busy-services", type=int, default=10)
    p.add_argument("--busy-rate", type=float, default=100.0, help="calls/s over all busy services together")
    p.add_argument("--rate", type=float, default=20.0, help="calls/s to the measured service")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of each measured stage")
    p.add_argument("--fill-connections", type=int, default=128, help="creates in flight while filling")
    p.add_argument("--ref-jobs", type=int, default=10_000, help="create-only burst into an empty queue (stage 1)")
    p.add_argument("--drain-workers", type=int, default=8)
    p.add_argument("--drain-timeout", type=float, default=3600.0)
    p.add_argument("--retention-seconds", type=float, default=30.0,
                   help="the control-plane's RETENTION_DAYS, in seconds: drained jobs are pruned after it")
    p.add_argument("--prune-wait", type=float, default=600.0, help="most seconds to wait for pruning")
    p.add_argument("--settle", type=float, default=65.0, help="seconds for autovacuum after pruning (naptime 60 s)")
    p.add_argument("--out", help="JSON path (default bench/results/backlog-<timestamp>.json)")
    bench_stack.add_options(p)
    a = p.parse_args()

    import run as bench_run

    started = dt.datetime.now(dt.timezone.utc)
    env = {"RETENTION_DAYS": repr(a.retention_seconds / 86400), **bench_stack.env_from(a)}
    stk = bench_stack.Stack.start(durable=not a.unsafe_pg, env=env, database="backlog")
    try:
        cluster = stk.create_cluster("backlog bench")
        res = asyncio.run(main_async(a, stk, cluster))
        res["pg_settings"] = dict(stk.psql(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes',"
            " 'autovacuum', 'autovacuum_naptime', 'autovacuum_vacuum_scale_factor', 'autovacuum_vacuum_threshold',"
            " 'autovacuum_vacuum_insert_scale_factor', 'autovacuum_vacuum_cost_limit', 'shared_buffers')"))
    finally:
        stk.stop()
    res.update({"command": " ".join(sys.argv), "started": started.isoformat(timespec="seconds"),
                "options": vars(a), "postgres_durable": stk.durable, "machine": bench_run.machine_info(),
                "commit": bench_run.subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                                   capture_output=True, text=True).stdout.strip()})
    out = Path(a.out) if a.out else BENCH / "results" / f"backlog-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    print(report(res))
    print(f"\nwrote {out}")
    bad = sum(s["measured"]["lost"] + s["measured"]["duplicated"] + s["busy"]["lost"] + s["busy"]["duplicated"]
              for s in res["stages"].values()) + res["drain"]["duplicated"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    _ = psutil  # the samplers use it (harness); imported here so a missing install fails first
    main()
