"""The Python SDK as a caller, in its own process, for bench/sdk_scenarios.py.

Makes `calls` calls of `SERVICE.echo(TAG, i)` and checks that each result is `[TAG, i]`, its own
echo. Prints one JSON line: completed, lost (no result within the deadline), mismatched, errors
by type, each call's latency, the time from the first call to the last result, and this
process's CPU (user+system, every thread) spent making the calls, and its peak RSS.

    python bench/sdk_caller.py ENDPOINT SECRET SERVICE TAG MODE CALLS [--threads N] [--deadline S]

MODE:
  sequential  one blocking call after another (`Differential`)
  threads     one OS thread per call, every call in flight at once (`Differential`, blocking calls)
  background  `--threads` threads create every call with `background=True` (the call returns its
              job id once created); as each create returns, another `--threads` threads wait for
              its result with `Differential.result(job_id)`: every call is in flight at once
              without one OS thread per call
  asyncio     `asyncio.gather` of every call (`AsyncDifferential`)
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import resource
import sys
import threading
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Tally:
    def __init__(self, tag: str, calls: int) -> None:
        self.tag = tag
        self.calls = calls
        self.lat: list = []
        self.completed = 0
        self.mismatched = 0
        self.lost = 0
        self.errors: collections.Counter = collections.Counter()
        self.error_examples: dict = {}
        self.last = 0.0
        self.lock = threading.Lock()

    def done(self, i: int, started: float, value=None, error: BaseException | None = None) -> None:
        from differential import CallTimeoutError

        now = time.monotonic()
        with self.lock:
            if error is not None:
                if isinstance(error, (CallTimeoutError, asyncio.TimeoutError)):
                    self.lost += 1
                else:
                    self.errors[type(error).__name__] += 1
                    self.error_examples.setdefault(type(error).__name__, str(error)[:300])
                return
            self.completed += 1
            self.last = max(self.last, now)
            self.lat.append((now - started) * 1000)
            if value != [self.tag, i]:
                self.mismatched += 1


def run_sync(a, t: Tally) -> float:
    from differential import Differential

    d = Differential(a.secret, endpoint=a.endpoint)
    fn = d.client(a.service, wait=a.deadline).echo
    try:
        t0 = time.monotonic()

        def one(i: int) -> None:
            s = time.monotonic()
            try:
                t.done(i, s, fn(t.tag, i))
            except Exception as e:
                t.done(i, s, error=e)

        if a.mode == "sequential":
            for i in range(t.calls):
                one(i)
        elif a.mode == "threads":
            # Every call gets its own thread, all started before any is joined.
            threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(t.calls)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(a.deadline + 30)
        else:  # background
            bg = fn.with_options(background=True)
            waiters = concurrent.futures.ThreadPoolExecutor(a.threads, thread_name_prefix="wait")

            def wait(i: int, s: float, job_id: str) -> None:
                try:
                    t.done(i, s, d.result(job_id, timeout=max(0.0, a.deadline - (time.monotonic() - s))))
                except Exception as e:
                    t.done(i, s, error=e)

            def create(i: int) -> concurrent.futures.Future | None:
                s = time.monotonic()
                try:
                    return waiters.submit(wait, i, s, bg(t.tag, i))
                except Exception as e:
                    t.done(i, s, error=e)
                    return None

            with concurrent.futures.ThreadPoolExecutor(a.threads, thread_name_prefix="create") as creators:
                created = list(creators.map(create, range(t.calls)))
            concurrent.futures.wait([f for f in created if f is not None], timeout=a.deadline + 30)
            waiters.shutdown(wait=False)
        return t0
    finally:
        d.close()


async def run_async(a, t: Tally) -> float:
    from differential import AsyncDifferential

    async with AsyncDifferential(a.secret, endpoint=a.endpoint) as d:
        fn = d.client(a.service, wait=a.deadline).echo

        async def one(i: int) -> None:
            s = time.monotonic()
            try:
                t.done(i, s, await fn(t.tag, i))
            except Exception as e:
                t.done(i, s, error=e)

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(t.calls)))
        return t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("secret")
    p.add_argument("service")
    p.add_argument("tag")
    p.add_argument("mode", choices=["sequential", "threads", "background", "asyncio"])
    p.add_argument("calls", type=int)
    p.add_argument("--threads", type=int, default=64, help="background mode: creating and waiting threads, each")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds a call waits before it counts as lost")
    a = p.parse_args()
    import differential  # noqa: F401  (imported before the CPU count starts)

    t = Tally(a.tag, a.calls)
    cpu0 = _cpu()
    t0 = asyncio.run(run_async(a, t)) if a.mode == "asyncio" else run_sync(a, t)
    cpu = _cpu() - cpu0
    t.lost += t.calls - t.completed - t.lost - sum(t.errors.values())  # threads that never returned
    print(json.dumps({
        "calls": t.calls, "completed": t.completed, "lost": t.lost, "mismatched": t.mismatched,
        "errors": dict(t.errors), "error_examples": t.error_examples, "elapsed_s": round(max(0.0, t.last - t0), 3), "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "latencies_ms": [round(x, 2) for x in t.lat],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
