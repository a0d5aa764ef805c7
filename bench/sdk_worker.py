"""The Python SDK as a worker, in its own process, for bench/sdk_scenarios.py.

Runs one `differential.Service` with an `echo(tag, i)` function that returns `[tag, i]` and
counts how often each call ran, so the bench can tell a job run twice from one run once. Prints
`ready` once the worker polls; reading EOF on stdin stops it gracefully, and it prints one JSON
line: executions, calls run more than once, runs of calls it was never meant to see, the worker's
own stats and its peak RSS.

    python bench/sdk_worker.py ENDPOINT SECRET SERVICE TAG [--concurrency N] [--async-echo]

The SDK imported is whichever `differential` is first on sys.path (the bench sets PYTHONPATH to
the SDK tree under test).
"""
from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import threading
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("secret")
    p.add_argument("service")
    p.add_argument("tag")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--async-echo", action="store_true", help="an async def function (runs on the worker's loop)")
    a = p.parse_args()

    from differential import Service
    from differential.transport import Config

    counts: collections.Counter = collections.Counter()
    foreign = [0]
    lock = threading.Lock()

    def record(tag, i) -> None:
        with lock:
            if tag == a.tag:
                counts[i] += 1
            else:
                foreign[0] += 1

    svc = Service(a.service, Config(api_secret=a.secret, endpoint=a.endpoint), concurrency=a.concurrency)
    if a.async_echo:
        async def echo(tag: str, i: int) -> list:
            record(tag, i)
            return [tag, i]
    else:
        def echo(tag: str, i: int) -> list:
            record(tag, i)
            return [tag, i]
    svc.register(echo)
    svc.start()
    time.sleep(0.3)  # its first long poll is in
    print("ready", flush=True)
    sys.stdin.read()  # the bench closes our stdin when the caller is done
    ok = svc.stop(timeout=20)
    twice = {str(i): n for i, n in counts.items() if n > 1}
    print(json.dumps({
        "executions": sum(counts.values()), "distinct": len(counts), "run_twice": twice,
        "duplicated": sum(n - 1 for n in counts.values() if n > 1) + foreign[0], "foreign": foreign[0],
        "stats": svc.stats, "stopped_cleanly": ok,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
