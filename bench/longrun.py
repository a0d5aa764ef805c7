"""The long run: steady calls on an absolute schedule for many minutes, with pruning throughout.

    .venv/bin/python bench/longrun.py                          # 200 calls/s for 30 minutes (issue 17 item 5)
    .venv/bin/python bench/longrun.py --minutes 2 --retention 60   # a short check (about 2.5 min)
    .venv/bin/python bench/longrun.py --png bench/longrun.png  # where the curve goes
    .venv/bin/python bench/longrun.py --unsafe-pg              # UNSAFE PostgreSQL (no flush in any figure)

Starts a throwaway PostgreSQL 15 with default durability and the real gunicorn control-plane on it
(bench/stack.py), with `RETENTION_DAYS` and `METRICS_RETENTION_DAYS` set to `--retention` seconds
(in days), so that finished jobs, events and rollups are pruned from the first minutes on. The
harness (bench/harness.py, in its bounded mode: per-window figures, finished calls forgotten) makes
`--rate` calls a second on an absolute schedule: call i is made at t0 + i/rate, whatever happened
before, so a stall shows as latency, not as a lower rate.

Every `--sample` seconds (10) it records: calls finished in that window (calls/s) and their p50 /
p99 latency, calls created and still outstanding, control-plane RSS (sum over the gunicorn tree)
and CPU (cores busy over the window), PostgreSQL CPU, the harness's own RSS, and for the hot
tables (jobs, events, metric_rollups, machines, workers) pg_total_relation_size, the index size,
n_live_tup and n_dead_tup. It reports p99 of the first and last `--edge` minutes (5; a quarter
of the run when shorter than 20 minutes) and their ratio (issue 17 wants <= 1.3), RSS and the
table sizes at the first sample, once warmed up (retention + 2 minutes in), and at the end.

Writes bench/results/longrun-<ts>.json (every sample, the options, postgres_durable, the machine,
the commit) and, when matplotlib is installed (requirements/bench.txt, an optional extra), the
curve as bench/results/longrun-<ts>.png (`--png PATH`); without it the plot is skipped, and says so
(`bench/plot.py <json>` draws it later). Exit 1 when a call was lost, run twice or mismatched.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _p in (str(BENCH), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import harness  # noqa: E402
import psutil  # noqa: E402
import stack as bench_stack  # noqa: E402
from report import HOT_TABLES, commit, fmt, table_stats, write_result  # noqa: E402

# --- the run ---------------------------------------------------------------------------------

def _window(run: harness.Run, start: int, end: int) -> dict:
    lat = run.latencies[start:end]
    return {"finished": end - start, "p50_ms": harness._r(harness.pct(lat, 50)),
            "p99_ms": harness._r(harness.pct(lat, 99)), "max_ms": harness._r(max(lat) if lat else None)}


async def drive(stack, secret: str, opts: harness.Options, *, rate: float, seconds: float, sample_s: float) -> dict:
    run = harness.Run(stack.endpoints, secret, opts, "longrun", bounded=True)
    cp = harness.TreeMeter(stack.pids)
    pg = harness.TreeMeter([stack.pg_pid])
    me = psutil.Process()
    samples: list[dict] = []
    created = failed = 0

    async def create(i: int) -> None:
        nonlocal created, failed
        if await run.create(i) is None:
            failed += 1
        else:
            created += 1

    def probe() -> dict:  # blocking: psutil and one psql connection, in a thread
        return {"cp_cpu_s": cp.cpu_s(), "cp_rss_mb": cp.rss_mb(), "pg_cpu_s": pg.cpu_s(),
                "harness_rss_mb": round(me.memory_info().rss / 2**20, 1), "tables": table_stats(stack)}

    async def sampler(t0: float) -> None:
        seen = 0
        last_t, last = t0, await asyncio.to_thread(probe)
        n = 1
        while True:  # ended by cancel
            await asyncio.sleep(max(0.0, t0 + n * sample_s - time.monotonic()))
            n += 1
            now = time.monotonic()
            p = await asyncio.to_thread(probe)
            end = len(run.latencies)
            span = now - last_t
            w = _window(run, seen, end)
            samples.append({
                "t_s": round(now - t0, 1), "calls_per_s": round(w["finished"] / span, 1), **w,
                "created": created, "failed": failed, "outstanding": len(run.futures),
                "cp_rss_mb": p["cp_rss_mb"], "cp_cores": round((p["cp_cpu_s"] - last["cp_cpu_s"]) / span, 3),
                "pg_cores": round((p["pg_cpu_s"] - last["pg_cpu_s"]) / span, 3),
                "harness_rss_mb": p["harness_rss_mb"], "tables": p["tables"]})
            s = samples[-1]
            print(f"  t={s['t_s']:>6}s  {s['calls_per_s']:>6}/s  p50 {fmt(s['p50_ms'])}  p99 {fmt(s['p99_ms'])} ms  "
                  f"CP {s['cp_rss_mb']} MB {s['cp_cores']} cores  PG {s['pg_cores']} cores  jobs "
                  f"{s['tables'].get('jobs', {}).get('total_mb')} MB  events {s['tables'].get('events', {}).get('total_mb')} MB "
                  f"(vacuumed {s['tables'].get('events', {}).get('vacuums')} times)",
                  file=sys.stderr, flush=True)
            seen, last_t, last = end, now, p

    cpu0 = sum(me.cpu_times()[:2])
    try:
        await run.start()
        await asyncio.sleep(0.3)  # the workers' first polls are in
        t0 = time.monotonic()
        sampling = asyncio.create_task(sampler(t0))
        calls = int(rate * seconds)
        for i in range(calls):  # absolute schedule: no drift, no catch-up bursts hidden
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            run._spawn(create(i))
        await asyncio.sleep(0.5)  # the last creates are answered
        pending = [f for f in run.futures.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=opts.deadline_s)
        t_last = max(run.finish_t) if len(run.finish_t) else time.monotonic()
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        await asyncio.sleep(0.2)  # late duplicate executions would show here
        out = run.outcome("longrun", calls, t_last - t0, failed)
        out.harness_cpu_s = sum(me.cpu_times()[:2]) - cpu0
        out.control_plane = {"cpu_s": round(cp.cpu_s(), 2)}
        out.postgres = {"cpu_s": round(pg.cpu_s(), 2)}
        finish_t = [t - t0 for t in run.finish_t]
        lat = list(run.latencies)
    finally:
        await run.shutdown()
    return {"outcome": out, "samples": samples, "finish_t": finish_t, "latencies": lat}


def edges(finish_t: list[float], lat: list[float], seconds: float, edge_s: float) -> dict:
    """p50/p99 of the calls finished in the first and in the last `edge_s` seconds of the schedule."""
    first = [v for t, v in zip(finish_t, lat, strict=True) if t <= edge_s]
    last = [v for t, v in zip(finish_t, lat, strict=True) if seconds - edge_s < t <= seconds + 1]
    p99f, p99l = harness.pct(first, 99), harness.pct(last, 99)
    return {"edge_s": edge_s, "first": {"calls": len(first), "p50_ms": harness._r(harness.pct(first, 50)),
                                        "p99_ms": harness._r(p99f)},
            "last": {"calls": len(last), "p50_ms": harness._r(harness.pct(last, 50)), "p99_ms": harness._r(p99l)},
            "p99_ratio": round(p99l / p99f, 3) if p99f and p99l else None}


def marks(samples: list[dict], warm_s: float) -> dict:
    """The first sample, the first once warmed up (retention + 2 min in), and the last."""
    if not samples:
        return {}
    warm = next((s for s in samples if s["t_s"] >= warm_s), None)
    pick = {"first": samples[0], "warm": warm, "last": samples[-1]}
    return {k: None if s is None else {"t_s": s["t_s"], "cp_rss_mb": s["cp_rss_mb"],
                                       "harness_rss_mb": s["harness_rss_mb"], "tables": s["tables"]}
            for k, s in pick.items()}


def report(summary: dict, edge: dict, mk: dict) -> str:
    lat = summary["latency_ms"]
    lines = [
        "| calls | completed | lost | dup | mismatched | create failed | calls/s | p50 ms | p99 ms | CP CPU s | PG CPU s | CP ms/call |",
        "|" + "---|" * 12,
        f"| {fmt(summary['calls'])} | {fmt(summary['completed'])} | {summary['lost']} | {summary['duplicated']} | "
        f"{summary['mismatched']} | {summary['create_failed']} | {fmt(summary['calls_per_s'])} | {fmt(lat['p50'])} | "
        f"{fmt(lat['p99'])} | {fmt(summary['control_plane'].get('cpu_s'), 2)} | {fmt(summary['postgres'].get('cpu_s'), 2)} | "
        f"{fmt(1000 * summary['control_plane'].get('cpu_s', 0) / max(1, summary['completed']), 2)} |",
        "",
        "| window | calls | p50 ms | p99 ms |", "|---|---|---|---|",
        f"| first {edge['edge_s'] / 60:g} min | {fmt(edge['first']['calls'])} | {fmt(edge['first']['p50_ms'])} | {fmt(edge['first']['p99_ms'])} |",
        f"| last {edge['edge_s'] / 60:g} min | {fmt(edge['last']['calls'])} | {fmt(edge['last']['p50_ms'])} | {fmt(edge['last']['p99_ms'])} |",
        f"| **p99 last / first** | | | **{fmt(edge['p99_ratio'], 2)}** |",
        "",
        "| at | t s | CP RSS MB | harness RSS MB | " + " | ".join(f"{t} MB (live / dead)" for t in HOT_TABLES) + " |",
        "|" + "---|" * (4 + len(HOT_TABLES)),
    ]
    for k in ("first", "warm", "last"):
        s = mk.get(k)
        if s is None:
            lines.append(f"| {k} | (run shorter than the warm-up) |" + " |" * (2 + len(HOT_TABLES)))
            continue
        cells = []
        for t in HOT_TABLES:
            st = s["tables"].get(t)
            cells.append("–" if st is None else f"{fmt(st['total_mb'], 2)} ({fmt(st['live'])} / {fmt(st['dead'])})")
        lines.append(f"| {k} | {s['t_s']} | {fmt(s['cp_rss_mb'])} | {fmt(s['harness_rss_mb'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=200.0, help="calls per second, on an absolute schedule")
    p.add_argument("--retention", type=float, default=300.0,
                   help="seconds: RETENTION_DAYS and METRICS_RETENTION_DAYS of the control-plane, in days")
    p.add_argument("--sample", type=float, default=10.0, help="seconds per sample window")
    p.add_argument("--edge", type=float, default=None,
                   help="minutes compared at the start and end (default 5; a quarter of a run under 20 min)")
    p.add_argument("--replicas", type=int, default=1, help="control-planes on the one PostgreSQL")
    p.add_argument("--png", help="where the curve goes (default bench/results/longrun-<ts>.png)")
    p.add_argument("--out", help="JSON path (default bench/results/longrun-<ts>.json)")
    harness.add_options(p)
    bench_stack.add_options(p)
    a = p.parse_args()
    opts = harness.options_from(a)
    seconds = a.minutes * 60
    edge_s = 60 * (a.edge if a.edge is not None else (5.0 if a.minutes >= 20 else a.minutes / 4))
    days = f"{a.retention / 86400:.8f}"
    env = {"RETENTION_DAYS": days, "METRICS_RETENTION_DAYS": days, **bench_stack.env_from(a)}
    started = dt.datetime.now(dt.timezone.utc)
    stack = bench_stack.Stack.start(durable=not a.unsafe_pg, replicas=a.replicas, env=env)
    try:
        secret = stack.create_cluster("longrun")["apiSecret"]
        print(f"-- longrun: {a.rate:g} calls/s for {a.minutes:g} min, retention {a.retention:g} s, "
              f"PostgreSQL {'durable' if stack.durable else 'UNSAFE (no flush)'}", file=sys.stderr, flush=True)
        res = asyncio.run(drive(stack, secret, opts, rate=a.rate, seconds=seconds, sample_s=a.sample))
        final_tables = table_stats(stack)
    finally:
        stack.stop()
    summary = res["outcome"].summary()
    edge = edges(res["finish_t"], res["latencies"], seconds, edge_s)
    mk = marks(res["samples"], a.retention + 120)
    ts = started.strftime("%Y%m%dT%H%M%SZ")
    png = Path(a.png) if a.png else BENCH / "results" / f"longrun-{ts}.png"
    doc = {"options": {**vars(opts), "minutes": a.minutes, "rate": a.rate, "retention_s": a.retention,
                       "sample_s": a.sample, "replicas": a.replicas, "env": env},
           "postgres_durable": stack.durable, "summary": summary, "edges": edge, "marks": mk,
           "final_tables": final_tables, "samples": res["samples"], "commit": commit()}
    import plot

    doc["png"] = plot.longrun_png(doc, png)
    path = write_result("longrun", doc, a.out, started)
    print(report(summary, edge, mk))
    print(f"\nplot: {doc['png']}" if not doc["png"].startswith("skipped") else f"\n{doc['png']}")
    print(f"written: {path}")
    bad = summary["lost"] or summary["duplicated"] or summary["mismatched"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
