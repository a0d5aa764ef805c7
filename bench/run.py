"""Run the standard benchmark set and write bench/results/<timestamp>.json plus a markdown table.

    .venv/bin/python bench/run.py                 # everything (about 15 minutes, most of it the Node 10k burst)
    .venv/bin/python bench/run.py --quick         # small versions of each scenario (a few minutes)
    .venv/bin/python bench/run.py --only burst10k,sequential
    .venv/bin/python bench/run.py --endpoint http://127.0.0.1:4000 --secret sk_... [--cp-pid PID]

Without --endpoint it starts a throwaway PostgreSQL 15 (tests/support/postgres.py) and the real
gunicorn control-plane on it (tests/support/server.py), creates a cluster, and stops both at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
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

NODE_DIR = REPO / "tests" / "node"
SCENARIOS = ["sequential", "burst1k", "burst10k", "burst10k_eid", "steady", "node1k", "node10k", "node_single"]


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = shutil.which("node")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip() if node else None
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "app_commit": subprocess.run(["git", "log", "-1", "--format=%h %s", "--", "app"], cwd=REPO,
                                         capture_output=True, text=True).stdout.strip()[:100], "loadavg_at_start": os.getloadavg(), "python": platform.python_version(),
            "node": node_version, "kernel": platform.release()}


# --- Node scenarios -------------------------------------------------------------------------------

def _node_env(endpoint: str, secret: str, service: str) -> dict:
    env = dict(os.environ)
    env.update({"DIFFERENTIAL_API_SECRET": secret, "DIFFERENTIAL_ENDPOINT": endpoint, "SERVICE": service})
    return env


def node_scenario(endpoint: str, secret: str, name: str, mode: str, count: int, deadline_s: float,
                  cp_pid: int | None, pg_pid: int | None) -> dict:
    node = shutil.which("node")
    if not node or not (NODE_DIR / "node_modules" / "@differentialhq" / "core").is_dir():
        return {"scenario": name, "skipped": "node or tests/node/node_modules/@differentialhq/core missing"}
    service = f"bench-{name}-{int(time.time())}"
    env = _node_env(endpoint, secret, service)
    log_dir = BENCH / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    lpath = log_dir / f"{name}-listener.log"
    with open(lpath, "wb") as log:
        listener = subprocess.Popen([node, str(BENCH / "node" / "listener.mjs")], cwd=NODE_DIR, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and b"ready" not in lpath.read_bytes():
            if listener.poll() is not None:
                return {"scenario": name, "error": "listener exited", "log": lpath.read_text()[-2000:]}
            time.sleep(0.1)
        time.sleep(0.5)  # its first /jobs-request is in
        cp = harness.ProcSampler(cp_pid).start()
        pg = harness.ProcSampler(pg_pid, pss_every=10**9).start()
        t0 = time.monotonic()
        caller = subprocess.Popen([node, str(BENCH / "node" / "caller.mjs"), mode, str(count), str(deadline_s)],
                                  cwd=NODE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        # The published SDK's listener exits on some control-plane answers (a non-204 to its result
        # POST, a 401 to its poll); its callers would then wait forever. Stop the caller then.
        listener_died = None
        t_end = time.monotonic() + deadline_s + 60
        while caller.poll() is None and time.monotonic() < t_end:
            if listener.poll() is not None and listener_died is None:
                listener_died = round(time.monotonic() - t0, 1)
                time.sleep(2)
                if caller.poll() is None:
                    caller.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        if caller.poll() is None:
            caller.kill()
        stdout, stderr = caller.communicate(timeout=30)
        r = subprocess.CompletedProcess(caller.args, caller.returncode, stdout, stderr)
        wall = time.monotonic() - t0
        cp_stats, pg_stats = cp.stop(), pg.stop()
    finally:
        listener.send_signal(signal.SIGTERM)
        try:
            listener.wait(timeout=10)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait(timeout=10)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    out = {"scenario": name, "wall_s": round(wall, 2), "control_plane": cp_stats, "postgres": {"cpu_s": pg_stats.get("cpu_s")}}
    if listener_died is not None:
        out["listener_died_at_s"] = listener_died
        out["listener_log_tail"] = lpath.read_text(errors="replace")[-1500:]
    if not lines:
        out["error"] = f"caller exit {r.returncode}: {r.stderr[-2000:]} {r.stdout[-1000:]}"
    else:
        out.update(json.loads(lines[-1]))
    llines = [ln for ln in lpath.read_text(errors="replace").splitlines() if ln.startswith("{")]
    if llines:
        out["listener"] = json.loads(llines[-1])
        out["duplicated"] = out["listener"].get("duplicates")
    return out


# --- table ---------------------------------------------------------------------------------------------

def _fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(results: list[dict]) -> str:
    head = ("| scenario | calls | completed | lost | dup | errors | calls/s | p50 ms | p95 ms | p99 ms | "
            "CP peak RSS MB (PSS) | CP CPU s | PG CPU s |")
    rows = [head, "|" + "---|" * 13]
    for r in results:
        if "skipped" in r or "error" in r and "completed" not in r:
            rows.append(f"| {r['scenario']} | {r.get('skipped') or r.get('error', '')[:80]} |" + " |" * 11)
            continue
        lat = r.get("latency_ms") or {}
        cp = r.get("control_plane") or {}
        errs = r.get("errors") or {}
        nerr = sum(errs.values()) if isinstance(errs, dict) else errs
        dup = (r.get("duplicated") or 0) + (r.get("mismatched") or 0)
        rss = f"{_fmt(cp.get('peak_rss_mb'))} ({_fmt(cp.get('peak_pss_mb'))})" if cp else "–"
        label = r["scenario"] + (f" (listener died at {r['listener_died_at_s']} s)" if r.get("listener_died_at_s") else "")
        rows.append(
            f"| {label} | {r.get('calls')} | {r.get('completed')} | {r.get('lost')} | {dup} | {nerr} | "
            f"{_fmt(r.get('calls_per_s'))} | {_fmt(lat.get('p50'))} | {_fmt(lat.get('p95'))} | {_fmt(lat.get('p99'))} | "
            f"{rss} | {_fmt(cp.get('cpu_s'), 2)} | {_fmt((r.get('postgres') or {}).get('cpu_s'), 2)} |")
    return "\n".join(rows)


# --- main ----------------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", help="an existing control-plane (else one is started)")
    p.add_argument("--secret", help="its cluster API secret")
    p.add_argument("--cp-pid", type=int, help="control-plane root pid to sample (default: whoever listens)")
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="small versions of every scenario")
    p.add_argument("--sequential-calls", type=int, default=500)
    p.add_argument("--rate", type=float, default=200, help="steady scenario: calls per second")
    p.add_argument("--duration", type=float, default=60, help="steady scenario: seconds")
    p.add_argument("--node10k-calls", type=int, default=10000, help="size of the node10k scenario (to probe the storm)")
    p.add_argument("--node-deadline", type=float, default=900, help="seconds before Node calls count as lost")
    p.add_argument("--out", help="JSON path (default bench/results/<timestamp>.json)")
    harness.add_options(p)
    bench_stack.add_options(p)
    a = p.parse_args()
    only = [s.strip() for s in a.only.split(",")] if a.only else SCENARIOS
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {SCENARIOS}")
    opts = harness.options_from(a)
    sizes = {"sequential": a.sequential_calls, "burst1k": 1000, "burst10k": 10000, "burst10k_eid": 10000, "node1k": 1000,
             "node10k": a.node10k_calls, "node_single": 10}
    rate, duration = a.rate, a.duration
    if a.quick:
        sizes = {"sequential": 100, "burst1k": 1000, "burst10k": 2000, "burst10k_eid": 2000, "node1k": 200, "node10k": 500,
                 "node_single": 3}
        duration = 10

    stack = None
    pg_pid = None
    if a.endpoint:
        if not a.secret:
            p.error("--endpoint needs --secret")
        endpoint, secret = a.endpoint, a.secret
        cp_pid = a.cp_pid or harness.find_listener_pid(__import__("httpx").URL(endpoint).port or 80)
    else:
        stack = bench_stack.Stack.start(durable=not a.unsafe_pg, env=bench_stack.env_from(a), root=a.app_root)
        endpoint, secret, pg_pid = stack.endpoint, stack.create_cluster("bench")["apiSecret"], stack.pg_pid
        cp_pid = stack.pids[0]
    started = dt.datetime.now(dt.timezone.utc)
    results: list[dict] = []
    try:
        for name in only:
            t = time.monotonic()
            load_before = os.getloadavg()[0]
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            if name == "sequential":
                o = asyncio.run(harness.scenario(endpoint, secret, "sequential", opts, calls=sizes[name],
                                                 cp_pid=cp_pid, pg_pid=pg_pid, name=name))
                res = o.summary()
            elif name in ("burst1k", "burst10k", "burst10k_eid"):
                # burst10k_eid: every create carries an executionId, as every Python SDK call does
                o = asyncio.run(harness.scenario(endpoint, secret, "burst",
                                                 dataclasses.replace(opts, execution_ids=True) if name.endswith("_eid") else opts,
                                                 calls=sizes[name],
                                                 cp_pid=cp_pid, pg_pid=pg_pid, name=name))
                res = o.summary()
            elif name == "steady":
                o = asyncio.run(harness.scenario(endpoint, secret, "steady", opts, rate=rate, duration=duration,
                                                 cp_pid=cp_pid, pg_pid=pg_pid, name=name))
                res = o.summary()
            elif name in ("node1k", "node10k"):
                res = node_scenario(endpoint, secret, name, "burst", sizes[name], a.node_deadline, cp_pid, pg_pid)
            else:
                res = node_scenario(endpoint, secret, name, "single", sizes[name], 120, cp_pid, pg_pid)
            # Other work on the machine skews every figure: keep the 1-minute load around each scenario.
            res["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            results.append(res)
            print(f"   {name}: {time.monotonic() - t:.1f}s  {json.dumps({k: res.get(k) for k in ('completed', 'lost', 'calls_per_s', 'latency_ms', 'errors')})[:400]}",
                  file=sys.stderr, flush=True)
    finally:
        if stack is not None:
            stack.stop()
            # Keep the control-plane's log (tests/support removes its temp dir at exit).
            try:
                log_dir = BENCH / "results" / "logs"
                log_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(stack.planes[0].log_path, log_dir / f"server-{started.strftime('%Y%m%dT%H%M%SZ')}.log")
            except OSError:
                pass
    doc = {"started": started.isoformat(timespec="seconds"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "endpoint": endpoint, "machine": machine_info(), "options": vars(opts),
           "postgres_durable": None if stack is None else stack.durable,
           "app_root": None if a.app_root is None else {"path": str(a.app_root), "commit": subprocess.run(
               ["git", "log", "-1", "--format=%h %s"], cwd=a.app_root, capture_output=True, text=True).stdout.strip()[:100]}, "quick": a.quick, "results": results}
    out = Path(a.out) if a.out else BENCH / "results" / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(table(results))
    print(f"\nwritten: {out}")
    bad = any((r.get("lost") or 0) or (r.get("duplicated") or 0) or (r.get("mismatched") or 0) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
