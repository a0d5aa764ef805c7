"""Many tenants: N clusters, each with one worker long-polling and a call every few seconds.

    .venv/bin/python bench/tenants.py                         # 1,000 tenants (issue 17 item 6)
    .venv/bin/python bench/tenants.py --tenants 100           # a short check
    .venv/bin/python bench/tenants.py --tenants 1000 --env GUNICORN_THREADS=1024   # room for 1,000 parked polls
    .venv/bin/python bench/tenants.py --unsafe-pg             # UNSAFE PostgreSQL (no flush in any figure)

Starts a throwaway PostgreSQL 15 with default durability and the real gunicorn control-plane
(bench/stack.py; its defaults unless `--env`), creates the clusters through the management API,
and gives each tenant what a Python SDK user runs: one worker (its own machine id) keeping one
`/jobs-request` long poll outstanding with the SDK's ttl (20 s) and asking again at once when it
returns, as sdk/src/differential/worker.py does, answering each job on a second connection; and
one caller that creates a call every `--call-interval` seconds (at a random phase) and waits for
it with a `/batch-jobs-status-request` long poll (ttl 20 s). Two connections per side, so 4 a
tenant.

Phases, all in one run on one stack:
1. baseline: one tenant alone (its own cluster), calls for `--call-seconds`: its p50 / p99;
2. settle: the N tenants' workers start polling (`--settle` seconds);
3. idle: `--idle-seconds` with every worker polling and no calls: control-plane CPU (cores, i.e.
   CPU seconds per second), RSS, PostgreSQL CPU, and polls per second (a parked poll returns
   after its ttl, so 1,000 parked workers make 50 polls/s; more means polls are answered at once);
4. calls: `--call-seconds` of calls from every tenant: each tenant's p50 / p99, the worst
   tenant's p99 against the baseline (issue 17 wants <= 2x), CPU and RSS again.

Writes bench/results/tenants-<ts>.json (every tenant's figures, the options, postgres_durable,
the machine, the commit) and prints a markdown table. Exit 1 when a call was lost.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import datetime as dt
import json
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import stack as bench_stack  # noqa: E402
from report import fmt, write_result  # noqa: E402
from rawhttp import RawClient  # noqa: E402

SERVICE = "tenant-svc"
TTL_MS = 20000  # the Python SDK's (sdk/src/differential/transport.py LONG_POLL_MS) and the server's maximum


class Counters:
    def __init__(self) -> None:
        self.c: collections.Counter = collections.Counter()
        self.quick_polls = 0  # /jobs-request answered [] in under 1 s: not parked (or woken for nothing)


class Tenant:
    def __init__(self, idx: int, host: str, port: int, secret: str, counters: Counters):
        self.idx = idx
        self.auth = f"Basic {secret}"
        tag = secrets.token_hex(3)
        self.worker_headers = {"authorization": self.auth, "x-machine-id": f"tenant{idx}-w-{tag}"}
        self.caller_headers = {"authorization": self.auth, "x-machine-id": f"tenant{idx}-c-{tag}"}
        timeout = TTL_MS / 1000 + 30
        self.poll_client = RawClient(host, port, 1, timeout=timeout)
        self.result_client = RawClient(host, port, 1, timeout=timeout)
        self.create_client = RawClient(host, port, 1, timeout=timeout)
        self.status_client = RawClient(host, port, 1, timeout=timeout)
        self.counters = counters
        self.latencies: list[float] = []
        self.stages: list[tuple] = []  # per call: ms from its create to: create answered, claimed, result answered
        self._marks: dict[str, list] = {}  # job id -> [t0, created, claimed, resulted]
        self.lost = 0
        self.errors = 0
        self.calls = 0
        self.n = 0
        self.stop = asyncio.Event()

    async def worker(self) -> None:
        body = {"limit": 10, "ttl": TTL_MS, "service": SERVICE, "functions": [{"name": "echo"}]}
        c = self.counters
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                c.c["jobs-request"] += 1
                status, data = await self.poll_client.post("/jobs-request", body, self.worker_headers)
            except Exception as exc:  # transport errors
                c.c[f"jobs-request error: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            if status != 200:
                c.c[f"jobs-request {status}"] += 1
                await asyncio.sleep(0.5)
                continue
            jobs = json.loads(data)
            if not jobs and time.monotonic() - t < 1.0:
                c.quick_polls += 1
            now = time.monotonic()
            for job in jobs:
                m = self._marks.get(job["id"])
                if m is not None:
                    m[2] = now
                asyncio.ensure_future(self.result(job))

    async def result(self, job: dict) -> None:
        body = {"result": job["targetArgs"], "resultType": "resolution", "functionExecutionTime": 0}
        try:
            self.counters.c["result"] += 1
            status, _ = await self.result_client.post(f"/jobs/{job['id']}/result", body, self.worker_headers)
            m = self._marks.get(job["id"])
            if m is not None:
                m[3] = time.monotonic()
            if status != 204:
                self.counters.c[f"result {status}"] += 1
        except Exception as exc:  # transport errors
            self.counters.c[f"result error: {type(exc).__name__}"] += 1

    async def call(self) -> None:
        self.n += 1
        args = harness.call_args(f"t{self.idx}", self.n)
        body = {"service": SERVICE, "targetFn": "echo", "targetArgs": args,
                "callConfig": {"retryCountOnStall": 3, "predictiveRetriesOnRejection": False, "timeoutSeconds": 300}}
        t0 = time.monotonic()
        self.calls += 1
        try:
            self.counters.c["create"] += 1
            status, data = await self.create_client.post("/jobs", body, self.caller_headers)
            if status != 201:
                self.errors += 1
                return
            job_id = json.loads(data)["id"]
            marks = self._marks[job_id] = [t0, time.monotonic(), None, None]
            deadline = t0 + 60
            while time.monotonic() < deadline:
                self.counters.c["status"] += 1
                status, data = await self.status_client.post(
                    "/batch-jobs-status-request", {"jobIds": [job_id], "ttl": TTL_MS}, self.caller_headers)
                if status != 200:
                    self.errors += 1
                    await asyncio.sleep(0.2)
                    continue
                rows = [r for r in json.loads(data) if r.get("id") == job_id and r.get("status") in ("success", "failure")]
                if rows:
                    if rows[0].get("result") != args:
                        self.errors += 1
                    self.latencies.append((time.monotonic() - t0) * 1000)
                    del self._marks[job_id]
                    self.stages.append(tuple(None if m is None else round((m - t0) * 1000, 1) for m in marks[1:]))
                    return
            self.lost += 1
        except Exception as exc:  # transport errors
            self.counters.c[f"call error: {type(exc).__name__}"] += 1
            self.errors += 1

    async def caller(self, interval: float, until: float) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        nxt = time.monotonic()
        while nxt < until:
            await self.call()
            nxt += interval
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    def figures(self) -> dict:
        lat = self.latencies
        return {"tenant": self.idx, "calls": self.calls, "completed": len(lat), "lost": self.lost,
                "errors": self.errors, "p50_ms": harness._r(harness.pct(lat, 50)),
                "p99_ms": harness._r(harness.pct(lat, 99)), "max_ms": harness._r(max(lat) if lat else None),
                "latencies_ms": [round(v, 1) for v in lat], "stages_ms": self.stages}

    async def aclose(self) -> None:
        for c in (self.poll_client, self.result_client, self.create_client, self.status_client):
            await c.aclose()


class Meter:
    """CPU and RSS of the control-plane and PostgreSQL over one phase."""

    def __init__(self, stack, counters: Counters):
        self.stack = stack
        self.cp = harness.TreeMeter(stack.pids)
        self.pg = harness.TreeMeter([stack.pg_pid])
        self.xacts0 = _transactions(stack)
        self.me0 = time.process_time()  # the harness alone (one process: near 1 core it is the limit, not the server)
        self.counters = counters
        self.t0 = time.monotonic()
        self.polls0 = counters.c["jobs-request"]
        self.quick0 = counters.quick_polls
        self.peak_rss = self.cp.rss_mb()

    async def watch(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(min(1.0, max(0.0, until - time.monotonic())))
            self.peak_rss = max(self.peak_rss, await asyncio.to_thread(self.cp.rss_mb))

    def done(self) -> dict:
        span = time.monotonic() - self.t0
        return {"seconds": round(span, 1), "cp_cores": round(self.cp.cpu_s() / span, 3),
                "cp_rss_mb": self.cp.rss_mb(), "cp_peak_rss_mb": self.peak_rss,
                "pg_cores": round(self.pg.cpu_s() / span, 3),
                "pg_transactions": _transactions(self.stack) - self.xacts0,
                "harness_cores": round((time.process_time() - self.me0) / span, 3),
                "polls_per_s": round((self.counters.c["jobs-request"] - self.polls0) / span, 1),
                "quick_polls_per_s": round((self.counters.quick_polls - self.quick0) / span, 1)}


def _transactions(stack) -> int:
    """Transactions the bench database has committed or rolled back (an autocommitted statement is
    one): round trips to PostgreSQL, counted, not timed."""
    [(n,)] = stack.psql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")
    return int(n)


async def calls_phase(tenants: list[Tenant], interval: float, seconds: float, meter: Meter) -> dict:
    until = time.monotonic() + seconds
    watch = asyncio.ensure_future(meter.watch(until))
    await asyncio.gather(*(t.caller(interval, until) for t in tenants))
    watch.cancel()
    return meter.done()


def summarize(tenants: list[Tenant]) -> dict:
    figs = [t.figures() for t in tenants]
    p99s = [f["p99_ms"] for f in figs if f["p99_ms"] is not None]
    every = [v for t in tenants for v in t.latencies]
    worst = max(figs, key=lambda f: f["p99_ms"] or 0) if figs else None
    # Where a call's time goes: create answered, the worker's poll got it, its result answered,
    # and the caller's status poll answered (the call's latency), each from the create's start.
    stages = [st + (lat,) for t in tenants for st, lat in zip(t.stages, t.latencies, strict=True)]
    stage_pct = {}
    for k, label in enumerate(("created", "claimed", "resulted", "done")):
        vals = [st[k] for st in stages if st[k] is not None]
        steps = [st[k] - st[k - 1] for st in stages if k and st[k] is not None and st[k - 1] is not None]
        stage_pct[label] = {"p50_ms": harness._r(harness.pct(vals, 50)), "p99_ms": harness._r(harness.pct(vals, 99)),
                            "step_p99_ms": harness._r(harness.pct(steps, 99)) if k else None}
    return {"tenants": len(tenants), "calls": sum(f["calls"] for f in figs), "completed": len(every),
            "lost": sum(f["lost"] for f in figs), "errors": sum(f["errors"] for f in figs),
            "p50_ms": harness._r(harness.pct(every, 50)), "p99_ms": harness._r(harness.pct(every, 99)),
            "tenant_p99_median_ms": harness._r(statistics.median(p99s)) if p99s else None,
            "tenant_p99_p90_ms": harness._r(harness.pct(p99s, 90)),
            "stages": stage_pct, "worst_tenant": worst, "per_tenant": figs}


async def main_async(stack, a, counters: Counters) -> dict:
    host, port = "127.0.0.1", stack.planes[0].port
    out: dict = {}
    loop = asyncio.get_running_loop()

    # 1. baseline: one tenant alone
    base_secret = stack.create_cluster("tenants-baseline")["apiSecret"]
    base = Tenant(-1, host, port, base_secret, counters)
    base_worker = asyncio.ensure_future(base.worker())
    await asyncio.sleep(1.0)
    print(f"-- baseline: 1 tenant, a call every {a.call_interval:g} s for {a.call_seconds:g} s", file=sys.stderr, flush=True)
    out["baseline_phase"] = await calls_phase([base], a.call_interval, a.call_seconds, Meter(stack, counters))
    out["baseline"] = summarize([base])
    base.stop.set()

    # 2. the N tenants' clusters, through the management API
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = [loop.run_in_executor(pool, stack.create_cluster, f"tenant-{i}") for i in range(a.tenants)]
        clusters = await asyncio.gather(*futs)
    out["create_clusters_s"] = round(time.monotonic() - t, 1)
    print(f"-- {a.tenants} clusters created in {out['create_clusters_s']} s; workers start", file=sys.stderr, flush=True)
    tenants = [Tenant(i, host, port, c["apiSecret"], counters) for i, c in enumerate(clusters)]
    workers = []
    for i, tn in enumerate(tenants):  # a few at a time, as machines coming up would
        workers.append(asyncio.ensure_future(tn.worker()))
        if i % 50 == 49:
            await asyncio.sleep(0.1)
    await asyncio.sleep(a.settle)

    # 3. idle
    print(f"-- idle: {a.tenants} workers polling, {a.idle_seconds:g} s", file=sys.stderr, flush=True)
    m = Meter(stack, counters)
    await m.watch(time.monotonic() + a.idle_seconds)
    out["idle"] = m.done()
    print(f"   idle: {json.dumps(out['idle'])}", file=sys.stderr, flush=True)

    # 4. calls
    print(f"-- calls: every tenant every {a.call_interval:g} s for {a.call_seconds:g} s", file=sys.stderr, flush=True)
    out["calls_phase"] = await calls_phase(tenants, a.call_interval, a.call_seconds, Meter(stack, counters))
    out["many"] = summarize(tenants)
    print(f"   calls: {json.dumps(out['calls_phase'])}", file=sys.stderr, flush=True)

    for tn in [base, *tenants]:
        tn.stop.set()
    for w in [base_worker, *workers]:
        w.cancel()
    await asyncio.gather(base_worker, *workers, return_exceptions=True)
    await asyncio.gather(*(tn.aclose() for tn in [base, *tenants]), return_exceptions=True)
    return out


def report(out: dict, a) -> str:
    b, m, idle, cp = out["baseline"], out["many"], out["idle"], out["calls_phase"]
    worst = m["worst_tenant"] or {}
    ratio = (worst.get("p99_ms") or 0) / b["p99_ms"] if b.get("p99_ms") else None
    out["worst_p99_vs_baseline"] = None if ratio is None else round(ratio, 2)
    rows = [
        f"Idle, {a.tenants} workers polling, no calls ({idle['seconds']} s):",
        "",
        "| CP cores (CPU s/s) | CP RSS MB | PG cores | polls/s | polls answered at once /s |",
        "|---|---|---|---|---|",
        f"| {idle['cp_cores']} | {idle['cp_rss_mb']} | {idle['pg_cores']} | {idle['polls_per_s']} | {idle['quick_polls_per_s']} |",
        "",
        f"Calls, one every {a.call_interval:g} s per tenant ({cp['seconds']} s):",
        "",
        "| run | tenants | calls | completed | lost | errors | p50 ms | p99 ms | tenant p99: median / p90 / worst ms | CP cores | CP peak RSS MB | PG cores | harness cores | polls/s |",
        "|" + "---|" * 14,
        f"| baseline | 1 | {b['calls']} | {b['completed']} | {b['lost']} | {b['errors']} | {fmt(b['p50_ms'])} | {fmt(b['p99_ms'])} | "
        f"– | {out['baseline_phase']['cp_cores']} | {out['baseline_phase']['cp_peak_rss_mb']} | {out['baseline_phase']['pg_cores']} | "
        f"{out['baseline_phase']['harness_cores']} | {out['baseline_phase']['polls_per_s']} |",
        f"| many | {m['tenants']} | {m['calls']} | {m['completed']} | {m['lost']} | {m['errors']} | {fmt(m['p50_ms'])} | {fmt(m['p99_ms'])} | "
        f"{fmt(m['tenant_p99_median_ms'])} / {fmt(m['tenant_p99_p90_ms'])} / {fmt(worst.get('p99_ms'))} | {cp['cp_cores']} | "
        f"{cp['cp_peak_rss_mb']} | {cp['pg_cores']} | {cp['harness_cores']} | {cp['polls_per_s']} |",
        "",
        f"**worst tenant's p99 / baseline p99: {fmt(out['worst_p99_vs_baseline'], 2)}** (tenant {worst.get('tenant')})",
        "",
        "PostgreSQL transactions (statements outside one count one each): idle "
        f"{fmt(idle['pg_transactions'] / idle['seconds'])}/s; a call of the baseline "
        f"{fmt(out['baseline_phase']['pg_transactions'] / max(1, b['calls']), 2)}, of the many "
        f"{fmt(cp['pg_transactions'] / max(1, m['calls']), 2)} (polls, heartbeats and maintenance included)",
        "",
        "Where the time goes (ms from the create's start; step: from the stage before):",
        "",
        "| run | create answered p50 / p99 | claimed p50 / p99 (step p99) | result answered p50 / p99 (step p99) | "
        "status answered p50 / p99 (step p99) |",
        "|---|---|---|---|---|",
    ]
    for label, r in (("baseline", b), ("many", m)):
        st = r["stages"]
        cells = [f"{fmt(st[k]['p50_ms'])} / {fmt(st[k]['p99_ms'])}" + (f" ({fmt(st[k]['step_p99_ms'])})" if k != "created" else "")
                 for k in ("created", "claimed", "resulted", "done")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--call-interval", type=float, default=5.0, help="seconds between one tenant's calls")
    p.add_argument("--call-seconds", type=float, default=60.0, help="length of the calls phase (and of the baseline)")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=10.0, help="seconds for the workers' polls to park")
    p.add_argument("--out", help="JSON path (default bench/results/tenants-<ts>.json)")
    bench_stack.add_options(p)
    a = p.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    counters = Counters()
    env = bench_stack.env_from(a)
    stack = bench_stack.Stack.start(durable=not a.unsafe_pg, env=env, root=a.app_root)
    try:
        out = asyncio.run(main_async(stack, a, counters))
        log_tail = stack.planes[0].log_tail(3000)
    finally:
        stack.stop()
    table = report(out, a)
    out["requests"] = dict(counters.c)
    doc = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k not in ("out",)}, "env": env,
           "postgres_durable": stack.durable, **out, "server_log_tail": log_tail}
    path = write_result("tenants", doc, a.out, started)
    print(table)
    print(f"\nwritten: {path}")
    return 1 if out["many"]["lost"] or out["baseline"]["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
