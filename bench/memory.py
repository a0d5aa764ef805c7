"""Peak memory of a control-plane worker under the audit's amplification requests (issue 11, H2/M5).

    .venv/bin/python bench/memory.py                      # every scenario, one fresh server each
    .venv/bin/python bench/memory.py --only sns8,bigpolls
    .venv/bin/python bench/memory.py --root /tmp/old-tree # the same scenarios against another tree
    .venv/bin/python bench/memory.py --env BODY_BUDGET_BYTES=33554432 --only bigpolls

Each scenario starts the real gunicorn control-plane (tests/support/server.py, embedded SQLite) as
the guide's 512 MB fly machine runs it (256 threads, MAX_BODY_BYTES 8 MiB), but with one worker, so
that worker takes every request (the worst case for it; fly runs two in 512 MB). It reads the
worker's VmHWM (peak RSS, /proc/<pid>/status) once the server is up and again after the requests,
and prints one table row per scenario (and, with --json, the rows as JSON).

  sns1/4/8     1, 4, 8 concurrent unauthenticated POST /events/sns of 8 MiB `[{},{},...]`
               (cloud features off, the default)
  sns8-cloud   the same with DEPLOYMENT_SNS_TOPIC set, plus 8 concurrent 290 KB `[{},...]` bodies
  bigpolls     40 concurrent batch polls of 41,000 x 200-character ids (8.4 MB each, ttl 15 s)
  bigresults   20 jobs with ~8 MB results each, then one small batch status request over them
  limitresults the same with results just under MAX_RESULT_BYTES (4 MiB), so they are stored
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import sys
import time
from pathlib import Path

import httpx

SCENARIOS = ["sns1", "sns4", "sns8", "sns8-cloud", "bigpolls", "bigresults", "limitresults"]
MIB = 1024 * 1024
FLY_ENV = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "256", "MAX_BODY_BYTES": str(8 * MIB),
           "LOG_LEVEL": "WARNING", "SWEEPER_ENABLED": "false"}
SNS_TOPIC = "arn:aws:sns:us-east-1:000000000000:differential-bench"


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def worker_pid(master_pid: int) -> int:
    import psutil

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(master_pid).children()
        if children:
            return children[0].pid
        time.sleep(0.1)
    raise RuntimeError("no gunicorn worker")


def post_many(url: str, bodies: list[bytes], headers: dict, timeout: float = 60.0) -> list[str]:
    """POST every body at once; the status of each (or the error's name: a server may answer and
    close before an oversized body is sent)."""

    def one(body: bytes) -> str:
        try:
            with httpx.Client(timeout=timeout) as client:
                r = client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
                return str(r.status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def counts(statuses: list[str]) -> str:
    out: dict[str, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return ", ".join(f"{n}x {s}" for s, n in sorted(out.items()))


def dicts_array(size: int) -> bytes:
    n = (size - 2) // 3
    return b"[" + b"{}," * n + b"{}]"


def run_sns(cp, concurrent_requests: int, cloud: bool) -> str:
    body = dicts_array(8 * MIB - 1024)
    notes = "8 MiB: " + counts(post_many(cp.url + "/events/sns", [body] * concurrent_requests, {}))
    if cloud:
        small = dicts_array(290 * 1024)
        notes += "; 290 KB: " + counts(post_many(cp.url + "/events/sns", [small] * concurrent_requests, {}))
    return notes


def run_bigpolls(cp, secret: str) -> str:
    ids = [f"{i:08d}" + "x" * 192 for i in range(41_000)]
    body = json.dumps({"jobIds": ids, "ttl": 15000}).encode()
    headers = {"Authorization": f"Basic {secret}"}
    return f"{len(body) / 1e6:.1f} MB each: " + counts(
        post_many(cp.url + "/batch-jobs-status-request", [body] * 40, headers))


def run_results(cp, secret: str, result_bytes: int) -> str:
    headers = {"Authorization": f"Basic {secret}", "x-machine-id": "bench-worker"}
    with httpx.Client(base_url=cp.url, headers=headers, timeout=120.0) as client:
        ids = [client.post("/jobs", json={"service": "mem", "targetFn": "f", "targetArgs": "kA=="}).json()["id"]
               for _ in range(20)]
        claimed = client.post("/jobs-request", json={"service": "mem", "limit": 20, "ttl": 0}).json()
        assert len(claimed) == 20, claimed
        result = base64.b64encode(b"\0" * (result_bytes * 3 // 4)).decode()
        codes = [client.post(f"/jobs/{job['id']}/result",
                             json={"result": result, "resultType": "resolution", "functionExecutionTime": 1}).status_code
                 for job in claimed]
        body = json.dumps({"jobIds": ids, "ttl": 0})
        r = client.post("/batch-jobs-status-request", content=body, headers={"Content-Type": "application/json"})
        rows = r.json()
        kinds = counts([f"{row['resultType']}" for row in rows])
    return (f"results {len(result) / 1e6:.1f} MB: {counts([str(c) for c in codes])}; status request of "
            f"{len(body)} B answered {r.status_code}, {len(r.content) / 1e6:.1f} MB, {len(rows)} rows ({kinds})")


def scenario(name: str, extra_env: dict) -> dict:
    from tests.support.server import ControlPlane

    env = {**FLY_ENV, **extra_env}
    if name == "sns8-cloud":
        env.update({"DEPLOYMENT_SNS_TOPIC": SNS_TOPIC, "SNS_VERIFY_SIGNATURES": "false"})
    with ControlPlane(env=env) as cp:
        pid = worker_pid(cp.pid)
        secret = cp.create_cluster()["apiSecret"]
        before = vm_hwm_mb(pid)
        started = time.monotonic()
        if name.startswith("sns"):
            notes = run_sns(cp, int(name[3:].split("-")[0]), cloud=name.endswith("cloud"))
        elif name == "bigpolls":
            notes = run_bigpolls(cp, secret)
        elif name == "bigresults":
            notes = run_results(cp, secret, 8_000_000)
        else:
            notes = run_results(cp, secret, 4 * MIB - 64 * 1024)
        live = httpx.get(cp.url + "/live", timeout=10).status_code
        return {"scenario": name, "vmhwm_start_mb": round(before), "vmhwm_peak_mb": round(vm_hwm_mb(pid)),
                "seconds": round(time.monotonic() - started, 1), "live_after": live, "notes": notes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--root", help="the tree to run (default: this one); its tests/support starts the server")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the server, e.g. BODY_BUDGET_BYTES=33554432 (repeatable)")
    args = parser.parse_args()
    root = Path(args.root).resolve() if args.root else Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    names = args.only.split(",") if args.only else SCENARIOS
    rows = []
    print("| scenario | worker VmHWM at start | peak | /live after | answers |")
    print("|---|---|---|---|---|")
    for name in names:
        row = scenario(name, dict(item.split("=", 1) for item in args.env))
        rows.append(row)
        print(f"| {name} | {row['vmhwm_start_mb']} MB | {row['vmhwm_peak_mb']} MB | {row['live_after']} | "
              f"{row['notes']} |", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
