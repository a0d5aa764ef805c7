"""What one request costs the control-plane before any work: keep-alive GETs of a cheap route.

    .venv/bin/python bench/request_cost.py                    # 20,000 GET /nope (a 404) over 64 connections
    .venv/bin/python bench/request_cost.py --path /live       # the liveness route (one database round trip)
    .venv/bin/python bench/request_cost.py --app-root /tmp/before --env GUNICORN_THREADS=16

Starts the throwaway PostgreSQL and control-plane of bench/stack.py, warms every connection up
(50 requests each), then sends `--requests` more, each connection one at a time, and prints the
control-plane's CPU (user + system, the gunicorn tree) per request. The burst scenarios make about
2.2 requests a call, so this is the floor under their CPU per call that no engine change can lower.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default="/nope", help="the route (default /nope: a 404 through Flask)")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--auth", action="store_true", help="send the cluster's secret (a guarded route)")
    bench_stack.add_options(p)
    a = p.parse_args()
    stack = bench_stack.Stack.start(durable=not a.unsafe_pg, env=bench_stack.env_from(a), root=a.app_root)
    try:
        secret = stack.create_cluster("request-cost")["apiSecret"] if a.auth else None
        asyncio.run(_send(stack.endpoint, a.path, secret, 50 * a.connections, a.connections))  # warm up
        meter = harness.TreeMeter(stack.pids)
        started = time.monotonic()
        asyncio.run(_send(stack.endpoint, a.path, secret, a.requests, a.connections))
        seconds, cpu = time.monotonic() - started, meter.cpu_s()
    finally:
        stack.stop()
    sent = max(1, a.requests // a.connections) * a.connections
    print(f"GET {a.path}: {sent} requests in {seconds:.2f} s ({sent / seconds:.0f}/s), control-plane CPU "
          f"{cpu:.2f} s = {1000 * cpu / sent:.3f} ms a request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
