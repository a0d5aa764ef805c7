"""What one request costs the control-plane before any work: keep-alive GETs of a cheap route.

    .venv/bin/python bench/request_cost.py                    # 20,000 GET /nope (a 404) over 64 connections
    .venv/bin/python bench/request_cost.py --path /live       # the liveness route (one database round trip)
    .venv/bin/python bench/request_cost.py --app-root /tmp/before --env GUNICORN_THREADS=16
    .venv/bin/python bench/request_cost.py --before /tmp/before --rounds 8   # two trees at once

Starts the throwaway PostgreSQL and control-plane of bench/stack.py, warms every connection up
(50 requests each), then sends `--requests` more, each connection one at a time, and prints the
control-plane's CPU (user + system, the gunicorn tree) per request. The burst scenarios make about
2.2 requests a call, so this is the floor under their CPU per call that no engine change can lower.

With `--before` (a checkout, as for side_by_side.py) the before tree and this one each get a
control-plane on the same PostgreSQL, and every round loads both at the same moment: one run after
another on this shared host differed by more than the changes measured.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _p in (str(BENCH), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import harness  # noqa: E402
import stack as bench_stack  # noqa: E402


async def _connection(host: str, port: int, count: int, request: bytes) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
    finally:
        writer.close()


async def _send(endpoint: str, path: str, auth: str | None, requests: int, connections: int) -> None:
    host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
    if auth:
        head += f"Authorization: Basic {auth}\r\n"
    request = (head + "\r\n").encode()
    per = max(1, requests // connections)
    await asyncio.gather(*(_connection(host, int(port), per, request) for _ in range(connections)))


def _measure(stacks: list, path: str, secrets: list, requests: int, connections: int) -> list[tuple[float, float]]:
    """Load every stack at once; (seconds, control-plane CPU seconds) of each."""
    meters = [harness.TreeMeter(stack.pids) for stack in stacks]
    ended: list[float] = [0.0] * len(stacks)
    started = time.monotonic()

    async def one(i: int) -> None:
        await _send(stacks[i].endpoint, path, secrets[i], requests, connections)
        ended[i] = time.monotonic() - started

    async def every() -> None:
        await asyncio.gather(*(one(i) for i in range(len(stacks))))
    asyncio.run(every())
    return [(ended[i], meters[i].cpu_s()) for i in range(len(stacks))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default="/nope", help="the route (default /nope: a 404 through Flask)")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--auth", action="store_true", help="send the cluster's secret (a guarded route)")
    p.add_argument("--before", type=Path, help="a checkout to load at the same moments as this tree")
    p.add_argument("--rounds", type=int, default=1)
    bench_stack.add_options(p)
    a = p.parse_args()
    durable = not a.unsafe_pg
    stacks = []
    try:
        if a.before:
            stacks.append(bench_stack.Stack.start(durable=durable, root=a.before, database="cost_before"))
        stacks.append(bench_stack.Stack.start(durable=durable, env=bench_stack.env_from(a), root=a.app_root,
                                              database="cost_after" if a.before else "bench"))
        secrets = [stack.create_cluster("request-cost")["apiSecret"] if a.auth else None for stack in stacks]
        _measure(stacks, a.path, secrets, 50 * a.connections, a.connections)  # warm up
        tags = ["before", "after"] if a.before else ["this tree"]
        cpu = [0.0] * len(stacks)
        sent = max(1, a.requests // a.connections) * a.connections
        for n in range(a.rounds):
            got = _measure(stacks, a.path, secrets, a.requests, a.connections)
            for i, (_seconds, used) in enumerate(got):
                cpu[i] += used
            print(f"round {n + 1}: " + " | ".join(
                f"{tags[i]} {sent} in {seconds:.2f} s, CPU {used:.2f} s = {1000 * used / sent:.3f} ms a request"
                for i, (seconds, used) in enumerate(got)), flush=True)
    finally:
        for stack in stacks:
            stack.stop()
    total = sent * a.rounds
    print(f"GET {a.path}, {a.rounds} rounds: " + ", ".join(
        f"{tags[i]} {1000 * cpu[i] / total:.3f} ms a request" for i in range(len(stacks)))
        + (f" (after/before {cpu[1] / cpu[0]:.3f})" if a.before else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
