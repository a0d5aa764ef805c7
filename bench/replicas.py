"""Replicas: the burst on two (or more) control-planes sharing one PostgreSQL, and on one, in one run.

    .venv/bin/python bench/replicas.py                        # 10,000-call burst, 2 replicas then 1 (issue 17 item 7)
    .venv/bin/python bench/replicas.py --calls 2000           # a short check
    .venv/bin/python bench/replicas.py --replicas 3 --order one-first
    .venv/bin/python bench/replicas.py --unsafe-pg            # UNSAFE PostgreSQL (no flush in any figure)

Starts a throwaway PostgreSQL 15 with default durability and `--replicas` gunicorn control-planes
on one fresh database (bench/stack.py: one management secret, so one cluster serves through
every replica). The burst (bench/harness.py) spreads over the replicas: worker i polls replica
i % n, creates alternate between them, and so do the status polls; so a job is often created on
one replica, claimed on another and its result awaited on a third (NOTIFY carries the wake-ups).
Then the same burst on replica 0 alone (a fresh service, same database). Nothing may be lost or
run twice (exit 1 otherwise).

For each run: calls/s, latency, and CPU per call: of each replica's gunicorn tree, of all
replicas together, of PostgreSQL (postmaster and backends) and of the harness, in ms per call.
From those it prints the estimate of calls/s against replicas, each replica on its own cores and
PostgreSQL on `--pg-cores`:

    calls/s(n) = min(n * cores_per_replica * 1000 / cp_ms(n),  pg_cores * 1000 / pg_ms(n))

(cp_ms: control-plane CPU ms per call over all replicas, pg_ms: PostgreSQL's). "flat" takes both
from the one-replica run at every n; PostgreSQL is then the limit from
n* = pg_cores * cp_ms / (cores_per_replica * pg_ms) replicas on. "growing" draws the line through
the two runs (cp_ms(n) = cp_ms(1) + (n - 1) * added), since each replica adds LISTEN connections
and wakes its own parked polls for every create. Costs measured on a shared 2-core machine, with
everything on the same cores, are an upper bound of what each part costs on its own cores.
Writes bench/results/replicas-<ts>.json (every figure, the options, postgres_durable, the machine,
the commit).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import psutil  # noqa: E402
import stack as bench_stack  # noqa: E402
from report import fmt, write_result  # noqa: E402


def db_counters(stack) -> dict:
    """Commits of the bench database and the server's WAL (records, bytes, flushes): PostgreSQL's
    work counted, not timed. The server is this run's own (stack.py starts it)."""
    (commits,), = stack.psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    (records, nbytes, syncs), = stack.psql("SELECT wal_records, wal_bytes, wal_sync FROM pg_stat_wal")
    return {"commits": commits, "wal_records": records, "wal_bytes": int(nbytes), "wal_syncs": syncs}


async def burst(stack, endpoints: list[str], pids: list[int], secret: str, opts: harness.Options,
                calls: int, name: str) -> dict:
    pg_pid = stack.pg_pid
    run = harness.Run(endpoints, secret, opts, name)
    try:
        await run.start()
        await asyncio.sleep(0.3)  # the workers' first polls are in
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])
        meters = [harness.TreeMeter([pid]) for pid in pids]
        pg = harness.TreeMeter([pg_pid])
        db0 = await asyncio.to_thread(db_counters, stack)
        t0 = time.monotonic()
        ids = await asyncio.gather(*(run.create(i) for i in range(calls)))
        failed = sum(1 for i in ids if i is None)
        await harness._wait_all(run, ids, t0 + opts.deadline_s)
        elapsed = time.monotonic() - t0
        cp_cpu = [m.cpu_s() for m in meters]
        pg_cpu = pg.cpu_s()
        harness_cpu = sum(me.cpu_times()[:2]) - cpu0
        await asyncio.sleep(1.2)  # late duplicate executions would show here; backends report their stats
        db1 = await asyncio.to_thread(db_counters, stack)
        await run.shutdown()
        out = run.outcome(name, calls, elapsed, failed).summary()
    finally:
        await run.shutdown()
    done = max(1, out["completed"])
    out.pop("params", None)
    out.update({
        "replicas": len(endpoints),
        "cp_cpu_s": [round(c, 2) for c in cp_cpu], "pg_cpu_s": round(pg_cpu, 2), "harness_cpu_s": round(harness_cpu, 2),
        "cp_ms_per_call": [round(1000 * c / done, 3) for c in cp_cpu],
        "cp_ms_per_call_total": round(1000 * sum(cp_cpu) / done, 3),
        "pg_ms_per_call": round(1000 * pg_cpu / done, 3),
        "harness_ms_per_call": round(1000 * harness_cpu / done, 3),
        "db_per_call": {k: round((db1[k] - db0[k]) / done, 3) for k in db0},
    })
    return out


def estimate(one: dict, many: dict | None, cores_per_replica: float, pg_cores: float, upto: int) -> dict:
    """Two models. flat: the one-replica costs per call hold at any n. growing: each replica more
    adds what the measured n-replica run added per call (more LISTEN connections, each create
    waking polls in every replica), as a straight line through the two runs."""
    cp1, pg1 = one["cp_ms_per_call_total"], one["pg_ms_per_call"]
    d_cp = d_pg = 0.0
    if many and many["replicas"] > 1:
        d_cp = (many["cp_ms_per_call_total"] - cp1) / (many["replicas"] - 1)
        d_pg = (many["pg_ms_per_call"] - pg1) / (many["replicas"] - 1)
    rows = []
    for n in range(1, upto + 1):
        row = {"replicas": n}
        for model, dc, dp in (("flat", 0.0, 0.0), ("growing", d_cp, d_pg)):
            cp_ms, pg_ms = max(1e-6, cp1 + (n - 1) * dc), max(1e-6, pg1 + (n - 1) * dp)
            cp_limit, pg_limit = n * cores_per_replica * 1000 / cp_ms, pg_cores * 1000 / pg_ms
            row[model] = {"cp_ms": round(cp_ms, 3), "pg_ms": round(pg_ms, 3), "cp_limit": round(cp_limit),
                          "pg_limit": round(pg_limit), "calls_per_s": round(min(cp_limit, pg_limit)),
                          "limit": "control-plane" if cp_limit < pg_limit else "PostgreSQL"}
        rows.append(row)
    n_star = pg_cores * cp1 / (cores_per_replica * pg1) if pg1 else None
    return {"cp_ms_per_call": cp1, "pg_ms_per_call": pg1, "cp_ms_added_per_replica": round(d_cp, 3),
            "pg_ms_added_per_replica": round(d_pg, 3), "cores_per_replica": cores_per_replica,
            "pg_cores": pg_cores, "pg_limit_calls_per_s": round(pg_cores * 1000 / pg1) if pg1 else None,
            "pg_bound_from_replicas": round(n_star, 2) if n_star else None, "rows": rows}


def report(results: list[dict], est: dict) -> str:
    lines = ["| run | calls | completed | lost | dup | mismatched | errors | calls/s | p50 ms | p99 ms | "
             "CP ms/call per replica | CP ms/call total | PG ms/call | harness ms/call | "
             "per call: commits / WAL records / WAL bytes / WAL flushes |", "|" + "---|" * 15]
    for r in results:
        lat = r["latency_ms"]
        nerr = sum(r["errors"].values())
        lines.append(
            f"| {r['scenario']} | {fmt(r['calls'])} | {fmt(r['completed'])} | {r['lost']} | {r['duplicated']} | "
            f"{r['mismatched']} | {nerr} | {fmt(r['calls_per_s'])} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | "
            f"{' / '.join(f'{v:.2f}' for v in r['cp_ms_per_call'])} | {r['cp_ms_per_call_total']:.2f} | "
            f"{r['pg_ms_per_call']:.2f} | {r['harness_ms_per_call']:.2f} | "
            f"{r['db_per_call']['commits']:.2f} / {r['db_per_call']['wal_records']:.1f} / "
            f"{r['db_per_call']['wal_bytes']:,.0f} / {r['db_per_call']['wal_syncs']:.3f} |")
    lines += ["", f"Estimate from the one-replica run: CP {est['cp_ms_per_call']:.2f} ms/call on "
              f"{est['cores_per_replica']:g} core(s) per replica, PG {est['pg_ms_per_call']:.2f} ms/call on "
              f"{est['pg_cores']:g} core(s) (PostgreSQL's ceiling {fmt(est['pg_limit_calls_per_s'])} calls/s, "
              f"reached from {est['pg_bound_from_replicas']} replicas). Growing: each replica more adds "
              f"{est['cp_ms_added_per_replica']:.2f} CP ms and {est['pg_ms_added_per_replica']:.2f} PG ms per call "
              "(the line through the two runs):", "",
              "| replicas | flat: CP / PG limit calls/s | flat: estimate (limit) | growing: CP / PG ms per call | "
              "growing: CP / PG limit calls/s | growing: estimate (limit) |", "|---|---|---|---|---|---|"]
    for row in est["rows"]:
        f, g = row["flat"], row["growing"]
        lines.append(f"| {row['replicas']} | {fmt(f['cp_limit'])} / {fmt(f['pg_limit'])} | {fmt(f['calls_per_s'])} ({f['limit']}) | "
                     f"{g['cp_ms']:.2f} / {g['pg_ms']:.2f} | {fmt(g['cp_limit'])} / {fmt(g['pg_limit'])} | "
                     f"{fmt(g['calls_per_s'])} ({g['limit']}) |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--calls", type=int, default=10000, help="size of the burst")
    p.add_argument("--order", choices=["many-first", "one-first"], default="many-first")
    p.add_argument("--cores-per-replica", type=float, default=2.0,
                   help="for the estimate: cores a replica can use (its WEB_CONCURRENCY worker processes, "
                        "each held to one core by the GIL; 2 by default)")
    p.add_argument("--pg-cores", type=float, default=2.0, help="for the estimate")
    p.add_argument("--estimate-upto", type=int, default=8, help="replicas in the estimate's table")
    p.add_argument("--out", help="JSON path (default bench/results/replicas-<ts>.json)")
    harness.add_options(p)
    bench_stack.add_options(p)
    a = p.parse_args()
    opts = harness.options_from(a)
    started = dt.datetime.now(dt.timezone.utc)
    stack = bench_stack.Stack.start(durable=not a.unsafe_pg, replicas=a.replicas, env=bench_stack.env_from(a))
    results = []
    try:
        secret = stack.create_cluster("replicas")["apiSecret"]
        plan = [("many", stack.endpoints, stack.pids), ("one", stack.endpoints[:1], stack.pids[:1])]
        if a.order == "one-first":
            plan.reverse()
        for label, endpoints, pids in plan:
            name = f"burst{a.calls}-{len(endpoints)}x"
            print(f"-- {name}: {a.calls} calls over {len(endpoints)} replica(s)", file=sys.stderr, flush=True)
            # The one-replica run still samples every replica: the idle ones cost a little too.
            r = asyncio.run(burst(stack, endpoints, stack.pids if label == "one" else pids, secret, opts,
                                  a.calls, name))
            if label == "one":  # the idle replicas' CPU is not part of a call's cost
                r["idle_replicas_cpu_s"] = r["cp_cpu_s"][1:]
                r["cp_cpu_s"], r["cp_ms_per_call"] = r["cp_cpu_s"][:1], r["cp_ms_per_call"][:1]
                r["cp_ms_per_call_total"] = r["cp_ms_per_call"][0]
            results.append(r)
            print(f"   {r['completed']} completed, {r['lost']} lost, {r['duplicated']} dup, {r['calls_per_s']} calls/s",
                  file=sys.stderr, flush=True)
    finally:
        stack.stop()
    one = next(r for r in results if r["replicas"] == 1)
    many = next((r for r in results if r["replicas"] > 1), None)
    est = estimate(one, many, a.cores_per_replica, a.pg_cores, a.estimate_upto)
    doc = {"options": {**vars(opts), "replicas": a.replicas, "calls": a.calls, "order": a.order},
           "postgres_durable": stack.durable, "results": results, "estimate": est}
    path = write_result("replicas", doc, a.out, started)
    print(report(results, est))
    print(f"\nwritten: {path}")
    bad = any(r["lost"] or r["duplicated"] or r["mismatched"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
