"""Our Python SDK as worker and caller against the real control-plane: what SDK users get.

    .venv/bin/python bench/sdk_scenarios.py                          # all five scenarios
    .venv/bin/python bench/sdk_scenarios.py --only sdk-asyncio-1k,sdk-sequential
    .venv/bin/python bench/sdk_scenarios.py --small                  # 100 / 300 / 1,000 calls: a quick check
    .venv/bin/python bench/sdk_scenarios.py --sdk before=/tmp/sdk-before/src --sdk after=sdk/src
                                                                     # two SDK trees, alternating, same stack
    .venv/bin/python bench/sdk_scenarios.py --unsafe-pg              # UNSAFE PostgreSQL (no flush in any figure)
    .venv/bin/python bench/sdk_scenarios.py --only sdk-asyncio-10k --profile 20   # py-spy caller and worker

An older SDK tree to compare with: `mkdir /tmp/sdk-before && git archive <commit> sdk/src | tar -x -C
/tmp/sdk-before`, then `--sdk before=/tmp/sdk-before/sdk/src --sdk after=sdk/src`. The control-plane
is this worktree's in every case.

Scenarios (each on its own service, so nothing leaks between them):

| name | caller |
|---|---|
| `sdk-sequential` | 500 blocking calls one after another (`Differential`): latency |
| `sdk-threads-1k` | 1,000 OS threads, one blocking call each, all in flight at once |
| `sdk-threads-10k` | 10,000 calls in flight without 10,000 threads: 64 threads create them with `background=True`, 64 more wait for each with `Differential.result(job_id)` (`--bg-threads`) |
| `sdk-asyncio-1k`, `sdk-asyncio-10k` | `asyncio.gather` of 1,000 / 10,000 calls (`AsyncDifferential`) |

The worker is the SDK's `Service` with a sync `echo(tag, i)` (`--async-echo` for an `async def`),
`concurrency` 100 (`--worker-concurrency`; the SDK's default is 10), in its own process
(bench/sdk_worker.py); the caller in another (bench/sdk_caller.py). Each call's result must be
its own echo (mismatched), every call must finish by the deadline (lost), and the worker counts
executions per call (duplicated). CPU per call is user+system CPU over the calls of: the caller
(its own count, from its first call to its last result), the worker, the control-plane (gunicorn
master and workers) and PostgreSQL (sampled, harness.ProcSampler, over the caller's life).

Starts a throwaway PostgreSQL 15 with default durability and the gunicorn control-plane
(bench/stack.py), prints a markdown table and writes bench/results/sdk-<timestamp>.json. Exits 1
if any call was lost, run twice or answered with another call's result.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import harness  # noqa: E402
import stack as bench_stack  # noqa: E402
from run import machine_info  # noqa: E402

# name -> (caller mode, calls)
SCENARIOS = {
    "sdk-sequential": ("sequential", 500),
    "sdk-threads-1k": ("threads", 1000),
    "sdk-threads-10k": ("background", 10000),
    "sdk-asyncio-1k": ("asyncio", 1000),
    "sdk-asyncio-10k": ("asyncio", 10000),
}
SMALL = {"sdk-sequential": 100, "sdk-threads-1k": 300, "sdk-threads-10k": 1000, "sdk-asyncio-1k": 300,
         "sdk-asyncio-10k": 1000}


def _env(sdk_src: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([sdk_src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _last_json(text: str) -> dict | None:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def _per_call_ms(cpu_s, completed) -> float | None:
    return round(cpu_s * 1000 / completed, 3) if cpu_s is not None and completed else None


def one(stack: bench_stack.Stack, secret: str, name: str, calls: int, label: str, sdk_src: str, a,
        seq: int) -> dict:
    mode = SCENARIOS[name][0]
    tag = f"t{seq}"
    service = f"bench-{name}-{label}-{seq}"
    env = _env(sdk_src)
    py = sys.executable
    wargs = [py, str(BENCH / "sdk_worker.py"), stack.endpoint, secret, service, tag,
             "--concurrency", str(a.worker_concurrency)] + (["--async-echo"] if a.async_echo else [])
    worker = subprocess.Popen(wargs, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    caller = None
    out: dict = {"scenario": name, "sdk": label, "mode": mode, "calls": calls}
    try:
        line = worker.stdout.readline()  # "ready", or "" if it died
        if line.strip() != "ready":
            worker.kill()
            _, err = worker.communicate(timeout=10)
            out["error"] = f"worker did not start: {err[-1500:]}"
            return out
        samplers = {"control_plane": harness.ProcSampler(stack.pids[0]).start(),
                    "postgres": harness.ProcSampler(stack.pg_pid, pss_every=10**9).start(),
                    "worker": harness.ProcSampler(worker.pid, pss_every=10**9).start()}
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        caller = subprocess.Popen([py, str(BENCH / "sdk_caller.py"), stack.endpoint, secret, service, tag, mode,
                                   str(calls), "--threads", str(a.bg_threads), "--deadline", str(a.deadline)],
                                  env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        if a.profile:
            _profile(name, label, caller.pid, worker.pid, a.profile)
        try:
            cout, cerr = caller.communicate(timeout=a.deadline + 90)
        except subprocess.TimeoutExpired:
            caller.kill()
            cout, cerr = caller.communicate(timeout=10)
        wall = time.monotonic() - t0
        stats = {k: s.stop() for k, s in samplers.items()}
        out["wall_s"] = round(wall, 2)
        out["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        res = _last_json(cout)
        if res is None:
            out["error"] = f"caller exit {caller.returncode}: {cerr[-1500:]}"
        else:
            lat = res.pop("latencies_ms")
            out.update(res)
            out["latency_ms"] = {"p50": harness.pct(lat, 50), "p95": harness.pct(lat, 95),
                                 "p99": harness.pct(lat, 99), "max": max(lat) if lat else None}
            out["calls_per_s"] = round(res["completed"] / res["elapsed_s"], 1) if res["elapsed_s"] else None
            out["caller"] = {"cpu_s": res.pop("cpu_s"), "peak_rss_mb": res.pop("peak_rss_mb")}
            if cerr.strip():
                out["caller_stderr_tail"] = cerr[-800:]
        out["control_plane"] = stats["control_plane"]
        out["postgres"] = {"cpu_s": stats["postgres"].get("cpu_s")}
        out["worker"] = {"cpu_s": stats["worker"].get("cpu_s")}
    finally:
        if caller is not None and caller.poll() is None:
            caller.kill()
            caller.wait(timeout=10)
        try:
            wout, werr = worker.communicate(input="", timeout=40)  # EOF on stdin: stop gracefully
        except subprocess.TimeoutExpired:
            worker.kill()
            wout, werr = worker.communicate(timeout=10)
    w = _last_json(wout or "")
    if w is None:
        out["worker_error"] = (werr or "")[-1500:]
        out["duplicated"] = None
    else:
        out["duplicated"] = w["duplicated"]
        out["worker"].update({"peak_rss_mb": w["peak_rss_mb"], "executions": w["executions"],
                              "stats": w["stats"], "stopped_cleanly": w["stopped_cleanly"]})
        if w["run_twice"]:
            out["worker"]["run_twice"] = dict(list(w["run_twice"].items())[:20])
    done = out.get("completed")
    out["cpu_ms_per_call"] = {k: _per_call_ms((out.get(k) or {}).get("cpu_s"), done)
                              for k in ("caller", "worker", "control_plane", "postgres")}
    return out


def _profile(name: str, label: str, caller_pid: int, worker_pid: int, seconds: float) -> None:
    """py-spy both SDK processes in the background (raw folded stacks in bench/results/profiles/)."""
    spy = Path(sys.executable).parent / "py-spy"
    d = BENCH / "results" / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    for who, pid in (("caller", caller_pid), ("worker", worker_pid)):
        subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw",
                          "-o", str(d / f"{name}-{label}-{who}.txt")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _f(v, nd=1):
    if v is None:
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(results: list[dict]) -> str:
    rows = ["| scenario | sdk | calls | completed | lost | dup | mismatched | errors | calls/s | p50 ms | p95 ms | "
            "p99 ms | CPU ms/call: caller | worker | CP | PG | peak RSS MB: caller | worker |",
            "|" + "---|" * 20]
    for r in results:
        if "completed" not in r:
            rows.append(f"| {r['scenario']} | {r['sdk']} | {r['calls']} | {r.get('error', '')[:100]} |" + " |" * 16)
            continue
        lat, c = r.get("latency_ms") or {}, r.get("cpu_ms_per_call") or {}
        rows.append(
            f"| {r['scenario']} | {r['sdk']} | {r['calls']} | {r['completed']} | {r['lost']} | {_f(r.get('duplicated'))} | "
            f"{r['mismatched']} | {sum((r.get('errors') or {}).values())} | {_f(r.get('calls_per_s'))} | "
            f"{_f(lat.get('p50'))} | {_f(lat.get('p95'))} | {_f(lat.get('p99'))} | {_f(c.get('caller'), 2)} | "
            f"{_f(c.get('worker'), 2)} | {_f(c.get('control_plane'), 2)} | {_f(c.get('postgres'), 2)} | "
            f"{_f((r.get('caller') or {}).get('peak_rss_mb'))} | {_f((r.get('worker') or {}).get('peak_rss_mb'))} |")
    return "\n".join(rows)


def _commit() -> str:
    return subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()[:100]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated subset of: " + ",".join(SCENARIOS))
    p.add_argument("--small", action="store_true", help="small sizes (a quick check, not the figures)")
    p.add_argument("--calls", type=int, help="every scenario with this many calls (overrides its size)")
    p.add_argument("--sdk", action="append", default=[], metavar="LABEL=SRC",
                   help="an SDK tree to run (its src/ folder); repeat to compare, run alternating per scenario")
    p.add_argument("--repeat", type=int, default=1, help="run each scenario (and SDK) this many times")
    p.add_argument("--worker-concurrency", type=int, default=100, help="the worker Service's concurrency")
    p.add_argument("--async-echo", action="store_true", help="the worker's echo is an async def")
    p.add_argument("--bg-threads", type=int, default=64, help="sdk-threads-10k: creating and waiting threads, each")
    p.add_argument("--deadline", type=float, default=180.0, help="seconds a call waits before it counts as lost")
    p.add_argument("--profile", type=float, metavar="SECONDS",
                   help="py-spy the caller and the worker for this long (bench/results/profiles/)")
    p.add_argument("--out", help="JSON path (default bench/results/sdk-<timestamp>.json)")
    bench_stack.add_options(p)
    a = p.parse_args()
    only = [s.strip() for s in a.only.split(",")] if a.only else list(SCENARIOS)
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; known: {list(SCENARIOS)}")
    sdks = [tuple(s.split("=", 1)) for s in a.sdk] or [("this", str(REPO / "sdk" / "src"))]
    for label, src in sdks:
        if not (Path(src) / "differential" / "__init__.py").is_file():
            p.error(f"--sdk {label}={src}: no differential package there")
    sizes = {n: (a.calls or (SMALL[n] if a.small else c)) for n, (_, c) in SCENARIOS.items()}

    started = dt.datetime.now(dt.timezone.utc)
    commit = _commit()  # the tree the run started on
    stack = bench_stack.Stack.start(durable=not a.unsafe_pg, env=bench_stack.env_from(a))
    results: list[dict] = []
    try:
        secret = stack.create_cluster("sdk-bench")["apiSecret"]
        seq = 0
        for name in only:
            for _ in range(a.repeat):
                for label, src in sdks:
                    seq += 1
                    print(f"-- {name} [{label}] {sizes[name]} calls ...", file=sys.stderr, flush=True)
                    r = one(stack, secret, name, sizes[name], label, src, a, seq)
                    results.append(r)
                    print(f"   {json.dumps({k: r.get(k) for k in ('completed', 'lost', 'duplicated', 'calls_per_s', 'latency_ms', 'cpu_ms_per_call', 'error')})[:500]}",
                          file=sys.stderr, flush=True)
    finally:
        stack.stop()
    doc = {"started": started.isoformat(timespec="seconds"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "commit": commit, "machine": machine_info(), "postgres_durable": stack.durable,
           "options": {k: v for k, v in vars(a).items() if k != "out"}, "sdks": dict(sdks), "sizes": sizes,
           "results": results}
    out = Path(a.out) if a.out else BENCH / "results" / f"sdk-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(table(results))
    print(f"\nwritten: {out}  (PostgreSQL {'durable' if stack.durable else 'UNSAFE: fsync off'})")
    bad = any(r.get("lost") or r.get("duplicated") or r.get("mismatched") or "completed" not in r
              or r.get("duplicated") is None for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
