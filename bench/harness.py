"""Load harness for a Differential control-plane, speaking the wire protocol directly.

Everything here is plain HTTP against the five routes the published SDK uses
(`/jobs`, `/jobs-request`, `/jobs/:id/result`, `/batch-jobs-status-request`), so it can be pointed at
any control-plane that speaks the protocol, by endpoint and cluster secret. No SDK, no sleeps
between polls: workers keep one `/jobs-request` long poll outstanding each and answer every job at
once; callers wait for results with batched `/batch-jobs-status-request` long polls.

Each call carries unique arguments; the worker echoes them back as the result, so the caller can
check that the result it receives belongs to its own call. A job executed twice (claimed by two
polls) or a mismatching result counts as duplicated; a call with no result by the deadline is lost.

Usable alone:  .venv/bin/python bench/harness.py --endpoint URL --secret SK burst --calls 1000
(`bench/run.py` runs the standard set, starting PostgreSQL and the control-plane itself.)
"""
from __future__ import annotations

import argparse
import array
import asyncio
import base64
import collections
import json
import math
import secrets
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

# httpcore asks `import sniffio` on every request to learn the async library; when sniffio is not
# installed (anyio 4 no longer needs it) that failed import scans sys.path each time, a third of
# the harness's CPU. A None entry makes the import fail at once, and httpcore then assumes asyncio.
if "sniffio" not in sys.modules:
    try:
        import sniffio  # noqa: F401
    except ImportError:
        sys.modules["sniffio"] = None  # type: ignore[assignment]

import httpx
import psutil

from rawhttp import RawClient

SERVICE_FN = "echo"


# --- payloads -----------------------------------------------------------------------------------

def _msgpack_str(s: str) -> bytes:
    b = s.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return bytes([0xD9, len(b)]) + b
    return bytes([0xDA]) + len(b).to_bytes(2, "big") + b


def call_args(tag: str, i: int) -> str:
    """base64(msgpack([tag, "call-<i>"])): the positional-args array the SDK would send."""
    packed = bytes([0x92]) + _msgpack_str(tag) + _msgpack_str(f"call-{i}")
    return base64.b64encode(packed).decode()


# --- process sampling ---------------------------------------------------------------------------

def _proc_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def find_listener_pid(port: int) -> int | None:
    """The root process (gunicorn master) of whatever listens on 127.0.0.1:<port>."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    pids = {c.pid for c in conns if c.pid and c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            parent = p.parent()
            while parent is not None and parent.pid in pids:
                p, parent = parent, parent.parent()
            return p.pid
        except psutil.Error:
            continue
    return None


class ProcSampler:
    """Samples a process tree (e.g. the gunicorn master and its workers) in a thread.

    Peak RSS is the highest sum of RSS over the tree seen at one sample (every `interval` s); RSS
    counts pages shared after fork in every process, so it over-states the real total. Peak PSS (the
    shared pages split between their sharers) is sampled less often. CPU is user+system seconds
    used during the scenario, summed over the tree (processes that exit count up to their last sample).
    """

    def __init__(self, pid: int | None, interval: float = 0.2, pss_every: int = 5):
        self.pid = pid
        self.interval = interval
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_pss = 0
        self.nprocs = 0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def _sample(self, n: int) -> None:
        rss = pss = 0
        procs = _proc_tree(self.pid) if self.pid else []
        for p in procs:
            try:
                if n % self.pss_every == 0:
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", info.rss)
                else:
                    rss += p.memory_info().rss
                cpu = self._cpu(p)
            except psutil.Error:
                continue
            self._cpu_start.setdefault(p.pid, cpu if self._thread is None else 0.0)
            self._cpu_last[p.pid] = cpu
        self.nprocs = max(self.nprocs, len(procs))
        self.peak_rss = max(self.peak_rss, rss)
        if n % self.pss_every == 0:
            self.peak_pss = max(self.peak_pss, pss)

    def start(self) -> "ProcSampler":
        if not self.pid:
            return self
        self._sample(0)
        # Processes that appear later (a restarted worker) start from 0 CPU, which is right.
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-sampler")
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 1
        while not self._stop.wait(self.interval):
            self._sample(n)
            n += 1

    def stop(self) -> dict:
        if not self.pid:
            return {}
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._sample(0)
        cpu = sum(self._cpu_last[p] - self._cpu_start.get(p, 0.0) for p in self._cpu_last)
        return {"peak_rss_mb": round(self.peak_rss / 2**20, 1), "peak_pss_mb": round(self.peak_pss / 2**20, 1),
                "cpu_s": round(cpu, 2), "processes": self.nprocs}


class TreeMeter:
    """Cumulative user+system CPU seconds and current RSS of the process trees under `pids` (e.g.
    every replica's gunicorn master, or the postmaster). A process that exits keeps the CPU it was
    last seen with; one that appears later counts from its start."""

    def __init__(self, pids: list[int | None]):
        self.pids = [p for p in pids if p]
        self._cpu: dict[int, float] = {}
        self._base = 0.0
        self._base = self.cpu_s()

    def _procs(self) -> list[psutil.Process]:
        out = []
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                out += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return out

    def cpu_s(self) -> float:
        """CPU seconds used since this meter was made."""
        for p in self._procs():
            try:
                t = p.cpu_times()
                self._cpu[p.pid] = t.user + t.system
            except psutil.Error:
                continue
        return sum(self._cpu.values()) - self._base

    def rss_mb(self) -> float:
        total = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return round(total / 2**20, 1)


# --- results --------------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


@dataclass
class Outcome:
    scenario: str
    calls: int
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    create_failed: int = 0
    errors: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    latencies_ms: list = field(default_factory=list)
    requests: dict = field(default_factory=dict)
    control_plane: dict = field(default_factory=dict)
    postgres: dict = field(default_factory=dict)
    harness_cpu_s: float = 0.0
    params: dict = field(default_factory=dict)

    def summary(self) -> dict:
        lat = self.latencies_ms
        return {
            "scenario": self.scenario, "calls": self.calls, "completed": self.completed, "lost": self.lost,
            "duplicated": self.duplicated, "mismatched": self.mismatched, "create_failed": self.create_failed,
            "errors": self.errors, "elapsed_s": round(self.elapsed_s, 3),
            "calls_per_s": round(self.completed / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
            "latency_ms": {
                "p50": _r(pct(lat, 50)), "p95": _r(pct(lat, 95)), "p99": _r(pct(lat, 99)),
                "max": _r(max(lat) if lat else None), "mean": _r(statistics.fmean(lat) if lat else None),
            },
            "requests": self.requests, "control_plane": self.control_plane, "postgres": self.postgres,
            "harness_cpu_s": round(self.harness_cpu_s, 2), "params": self.params,
        }


def _r(v):
    return None if v is None else round(v, 2)


# --- the load generator -------------------------------------------------------------------------

@dataclass
class Options:
    workers: int = 4
    claim_batch: int = 100
    status_batch: int = 1000
    status_pollers: int = 8
    worker_ttl_ms: int = 5000
    status_ttl_ms: int = 20000
    connections: int = 64
    result_connections: int = 8
    client: str = "raw"
    deadline_s: float = 120.0
    execution_ids: bool = False  # every create carries a fresh executionId, as our Python SDK's do


class Run:
    """One scenario: its own service name (so nothing leaks between scenarios), workers, poller.

    `endpoint` may be a list (replicas of one control-plane): worker i polls endpoints[i % n],
    creates alternate over them, and status polls too.

    `bounded=True` keeps the harness's memory bounded for long runs: a finished call's id, args,
    start time and future are dropped at once; latencies are kept as (finish time, ms) in two
    arrays (8 bytes a call) for per-window figures; executions are checked as they arrive
    (a second execution of an id counts as duplicated at once) and forgotten `forget_after_s`
    after the call finished, when an execution of an id no caller created counts as foreign.
    """

    def __init__(self, endpoint: str | list[str], secret: str, opts: Options, scenario: str, *,
                 bounded: bool = False, forget_after_s: float = 600.0):
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self.endpoint = endpoints[0]
        self.endpoints = endpoints
        # httpcore scans every connection of a pool (and every queued request) each time it hands out
        # a connection, so one big pool costs O(connections) per request. Small pools instead: each
        # worker has its own (as separate machines would), callers shard creates over pools of 8,
        # and status long polls have their own.
        n = len(endpoints)
        self.worker_clients = [_client(endpoints[i % n], 1 + opts.result_connections, opts)
                               for i in range(opts.workers)]
        pools = max(1, math.ceil(opts.connections / 8))
        pools += (-pools) % n  # a multiple of n, so that create i goes to endpoints[i % n]
        self.create_clients = [_client(endpoints[i % n], 8, opts) for i in range(pools)]
        self.status_clients = [_client(ep, opts.status_pollers, opts) for ep in endpoints]
        self.status_client = self.status_clients[0]
        self._status_turn = 0
        self.bounded = bounded
        self.forget_after_s = forget_after_s
        self.duplicated = 0  # bounded: counted as executions arrive
        self.foreign = 0  # bounded: counted when an execution is forgotten
        self._forget: collections.deque[tuple[float, str]] = collections.deque()  # (when, id)
        self._created: dict[str, float] = {}  # bounded: id -> when finished (0.0: not yet)
        self.finish_t = array.array("d")  # bounded: monotonic finish time of each call
        self.opts = opts
        self.auth = f"Basic {secret}"
        self.tag = f"{scenario}-{secrets.token_hex(4)}"
        self.service = f"bench-{self.tag}"
        self.caller_headers = {"authorization": self.auth, "x-machine-id": f"bench-caller-{self.tag}"}
        self.errors: collections.Counter = collections.Counter()
        self.requests: collections.Counter = collections.Counter()
        self.executed: collections.Counter = collections.Counter()
        self.mismatched = 0
        # caller side
        self.expected: dict[str, str] = {}  # job id -> targetArgs it was created with
        self.started: dict[str, float] = {}  # job id -> monotonic time before POST /jobs
        self.futures: dict[str, asyncio.Future] = {}
        self.unassigned: collections.deque[str] = collections.deque()
        self.kick = asyncio.Event()
        self.stop = asyncio.Event()
        self.active_pollers = 0
        self.latencies: list[float] | array.array = array.array("f") if bounded else []
        self.completed = 0
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        # Short requests wait here, not in httpcore's pool queue: httpcore re-scans its whole queue on
        # every request it finishes (quadratic with 10,000 queued calls). Long polls have their own
        # connections on top of these (see _client).
        self.gate = asyncio.Semaphore(opts.connections)
        self.result_gates = [asyncio.Semaphore(opts.result_connections) for _ in range(opts.workers)]

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _error(self, what: str, detail) -> None:
        self.errors[f"{what}: {detail}"] += 1

    # -- workers ----------------------------------------------------------------------------------
    async def worker(self, idx: int) -> None:
        headers = {"authorization": self.auth, "x-machine-id": f"bench-w{idx}-{self.tag}"}
        body = {"limit": self.opts.claim_batch, "ttl": self.opts.worker_ttl_ms, "service": self.service,
                "functions": [{"name": SERVICE_FN}]}
        while not self.stop.is_set():  # bounded: the scenario sets stop at its deadline
            try:
                self.requests["jobs-request"] += 1
                status, data = await self.worker_clients[idx].post("/jobs-request", body, headers)
            except Exception as exc:  # transport errors of either client
                self._error("jobs-request", type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            if status != 200:
                self._error("jobs-request", status)
                await asyncio.sleep(0.05)
                continue
            for job in json.loads(data):
                self.executed[job["id"]] += 1
                if self.bounded and self.executed[job["id"]] == 2:
                    self.duplicated += 1
                # Answer at once, concurrently with the next long poll (as the SDK's task queue does).
                self._spawn(self.post_result(idx, job, headers))

    async def post_result(self, idx: int, job: dict, headers: dict) -> None:
        body = {"result": job["targetArgs"], "resultType": "resolution", "functionExecutionTime": 0}
        for attempt in range(3):
            try:
                self.requests["result"] += 1
                async with self.result_gates[idx]:
                    status, _ = await self.worker_clients[idx].post(f"/jobs/{job['id']}/result", body, headers)
            except Exception as exc:  # transport errors of either client
                self._error("result", type(exc).__name__)
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if status != 204:
                self._error("result", status)
            return

    # -- callers ----------------------------------------------------------------------------------
    async def create(self, i: int) -> str | None:
        args = call_args(self.tag, i)
        body = {"service": self.service, "targetFn": SERVICE_FN, "targetArgs": args,
                "callConfig": {"retryCountOnStall": 3, "predictiveRetriesOnRejection": False, "timeoutSeconds": 300}}
        if self.opts.execution_ids:  # as our SDK sends it: a random hex id in callConfig
            body["callConfig"]["executionId"] = secrets.token_hex(16)
        t0 = time.monotonic()
        try:
            self.requests["create"] += 1
            async with self.gate:
                status, data = await self.create_clients[i % len(self.create_clients)].post(
                    "/jobs", body, self.caller_headers)
        except Exception as exc:  # transport errors of either client
            self._error("create", type(exc).__name__)
            return None
        if status != 201:
            self._error("create", status)
            return None
        job_id = json.loads(data)["id"]
        if job_id in self.expected:  # two calls answered with one job: a duplicate of a kind
            self.mismatched += 1
            return None
        self.expected[job_id] = args
        self.started[job_id] = t0
        if self.bounded:
            self._created[job_id] = 0.0
        self.futures[job_id] = asyncio.get_running_loop().create_future()
        self.unassigned.append(job_id)
        self.kick.set()
        return job_id

    def _finish(self, row: dict) -> None:
        job_id = row["id"]
        fut = self.futures.get(job_id)
        if fut is None or fut.done():
            return
        if row.get("status") != "success" or row.get("result") != self.expected.get(job_id) \
                or row.get("resultType") != "resolution":
            self.mismatched += 1
        now = time.monotonic()
        self.latencies.append((now - self.started[job_id]) * 1000)
        self.completed += 1
        fut.set_result(row)
        if self.bounded:
            self.finish_t.append(now)
            del self.futures[job_id], self.started[job_id], self.expected[job_id]
            self._created[job_id] = now
            self._forget.append((now, job_id))
            self._expire(now)

    def _expire(self, now: float) -> None:
        """Bounded runs: forget calls finished more than `forget_after_s` ago, and executions of
        ids never created (foreign) seen that long ago."""
        cutoff = now - self.forget_after_s
        while self._forget and self._forget[0][0] < cutoff:
            _, job_id = self._forget.popleft()
            self._created.pop(job_id, None)
            self.executed.pop(job_id, None)
        if len(self.executed) > 2 * len(self._created) + 10_000:  # executions no create answered
            for job_id in [j for j in self.executed if j not in self._created and j not in self.expected]:
                self.foreign += 1
                del self.executed[job_id]

    async def status_supervisor(self) -> None:
        """Hands outstanding ids to status pollers: each keeps up to `status_batch` ids in one long
        poll, tops up from the new ids whenever its poll returns, and ends when it holds none."""
        while not self.stop.is_set():
            await self.kick.wait()
            self.kick.clear()
            while self.unassigned and self.active_pollers < self.opts.status_pollers:
                ids = set()
                while self.unassigned and len(ids) < self.opts.status_batch:
                    ids.add(self.unassigned.popleft())
                self.active_pollers += 1
                self._spawn(self.status_poller(ids))

    async def status_poller(self, ids: set[str]) -> None:
        try:
            while ids and not self.stop.is_set():
                body = {"jobIds": list(ids), "ttl": self.opts.status_ttl_ms}
                client = self.status_clients[self._status_turn % len(self.status_clients)]
                self._status_turn += 1
                try:
                    self.requests["status"] += 1
                    status, data = await client.post("/batch-jobs-status-request", body, self.caller_headers)
                except Exception as exc:  # transport errors of either client
                    self._error("status", type(exc).__name__)
                    await asyncio.sleep(0.05)
                    continue
                if status != 200:
                    self._error("status", status)
                    await asyncio.sleep(0.05)
                    continue
                for row in json.loads(data):
                    if row.get("status") in ("success", "failure") and row["id"] in ids:
                        ids.discard(row["id"])
                        self._finish(row)
                while self.unassigned and len(ids) < self.opts.status_batch:
                    ids.add(self.unassigned.popleft())
        finally:
            self.active_pollers -= 1
            if self.unassigned:
                self.kick.set()

    async def start(self) -> None:
        for i in range(self.opts.workers):
            self._spawn(self.worker(i))
        self._spawn(self.status_supervisor())

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        self.kick.set()
        pending = [t for t in self._tasks if not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for c in [*self.worker_clients, *self.create_clients, *self.status_clients]:
            await c.aclose()

    def outcome(self, scenario: str, calls: int, elapsed: float, create_failed: int) -> Outcome:
        if self.bounded:
            dup_exec = self.duplicated
            foreign = self.foreign + sum(1 for j in self.executed if j not in self._created and j not in self.expected)
        else:
            dup_exec = sum(1 for n in self.executed.values() if n > 1)
            foreign = sum(1 for j in self.executed if j not in self.expected)
        lost = sum(1 for f in self.futures.values() if not f.done())
        return Outcome(scenario=scenario, calls=calls, completed=self.completed, lost=lost,
                       duplicated=dup_exec + foreign, mismatched=self.mismatched, create_failed=create_failed,
                       errors=dict(self.errors), elapsed_s=elapsed, latencies_ms=self.latencies,
                       requests=dict(self.requests))


async def _wait_all(run: Run, ids: list, deadline: float) -> None:
    futs = [run.futures[i] for i in ids if i is not None]
    if futs:
        await asyncio.wait(futs, timeout=max(0.0, deadline - time.monotonic()))


class HttpxClient:
    """The same interface as RawClient, on httpx.AsyncClient (`--client httpx`)."""

    def __init__(self, endpoint: str, n: int, opts: "Options"):
        self.c = _httpx_client(endpoint, n, opts)

    async def post(self, path: str, obj, headers: dict) -> tuple[int, bytes]:
        r = await self.c.post(path, json=obj, headers=headers)
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self.c.aclose()


def _client(endpoint: str, n: int, opts: "Options"):
    if opts.client == "httpx":
        return HttpxClient(endpoint, n, opts)
    url = httpx.URL(endpoint)
    if url.scheme != "http":
        raise SystemExit("the lean client speaks plain http only; use --client httpx for https")
    return RawClient(url.host, url.port or 80, n, timeout=max(opts.worker_ttl_ms, opts.status_ttl_ms) / 1000 + 30)


_SSL = None


def _httpx_client(endpoint: str, n: int, opts: "Options") -> httpx.AsyncClient:
    global _SSL
    if _SSL is None:
        import ssl
        _SSL = ssl.create_default_context()  # one context for every client: building one costs ~10 ms
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n,
                          keepalive_expiry=60)
    timeout = httpx.Timeout(connect=10, read=max(opts.worker_ttl_ms, opts.status_ttl_ms) / 1000 + 30,
                            write=30, pool=None)
    return httpx.AsyncClient(base_url=endpoint.rstrip("/"), limits=limits, timeout=timeout, verify=_SSL)


async def scenario(endpoint: str, secret: str, kind: str, opts: Options, *, calls: int = 0, rate: float = 0,
                   duration: float = 0, cp_pid: int | None = None, pg_pid: int | None = None,
                   name: str | None = None) -> Outcome:
    """kind: sequential | burst | steady."""
    name = name or kind
    run = Run(endpoint, secret, opts, name)
    try:
        await run.start()
        await asyncio.sleep(0.3)  # workers' first polls are in (and the service registered)
        me = psutil.Process()
        cpu0 = sum(me.cpu_times()[:2])
        cp = ProcSampler(cp_pid).start()
        pg = ProcSampler(pg_pid, pss_every=10**9).start()
        t0 = time.monotonic()
        failed = 0
        if kind == "sequential":
            deadline = t0 + opts.deadline_s
            for i in range(calls):
                if time.monotonic() > deadline:
                    break
                job_id = await run.create(i)
                if job_id is None:
                    failed += 1
                    continue
                try:
                    await asyncio.wait_for(run.futures[job_id], timeout=max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
        elif kind == "burst":
            ids = await asyncio.gather(*(run.create(i) for i in range(calls)))
            failed = sum(1 for i in ids if i is None)
            await _wait_all(run, ids, t0 + opts.deadline_s)
        elif kind == "steady":
            calls = int(rate * duration)
            creators = []
            for i in range(calls):  # absolute schedule: no drift, no catch-up bursts hidden
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                creators.append(asyncio.create_task(run.create(i)))
            ids = await asyncio.gather(*creators)
            failed = sum(1 for i in ids if i is None)
            await _wait_all(run, ids, time.monotonic() + opts.deadline_s)
        else:
            raise ValueError(kind)
        elapsed = time.monotonic() - t0
        cp_stats, pg_stats = cp.stop(), pg.stop()
        harness_cpu = sum(me.cpu_times()[:2]) - cpu0
        await asyncio.sleep(0.2)  # late duplicate executions still arriving would show here
        await run.shutdown()
        out = run.outcome(name, calls, elapsed, failed)
        out.control_plane, out.postgres, out.harness_cpu_s = cp_stats, {"cpu_s": pg_stats.get("cpu_s")}, harness_cpu
        out.params = {"kind": kind, "calls": calls, "rate": rate or None, "duration_s": duration or None,
                      "workers": opts.workers, "claim_batch": opts.claim_batch, "status_batch": opts.status_batch,
                      "status_pollers": opts.status_pollers, "connections": opts.connections,
                      "result_connections": opts.result_connections, "client": opts.client,
                      "execution_ids": opts.execution_ids}
        return out
    finally:
        await run.shutdown()  # a no-op when the scenario got that far


def add_options(p: argparse.ArgumentParser) -> None:
    d = Options()
    p.add_argument("--workers", type=int, default=d.workers, help="worker tasks, one long poll each")
    p.add_argument("--claim-batch", type=int, default=d.claim_batch, help="limit sent in /jobs-request")
    p.add_argument("--status-batch", type=int, default=d.status_batch, help="most ids in one status long poll")
    p.add_argument("--status-pollers", type=int, default=d.status_pollers, help="most status long polls at once")
    p.add_argument("--connections", type=int, default=d.connections, help="callers: concurrent POST /jobs")
    p.add_argument("--result-connections", type=int, default=d.result_connections,
                   help="per worker: concurrent POST /jobs/:id/result")
    p.add_argument("--client", choices=["raw", "httpx"], default=d.client,
                   help="raw: the lean asyncio HTTP/1.1 client (bench/rawhttp.py); httpx: httpx.AsyncClient")
    p.add_argument("--deadline", type=float, default=d.deadline_s, help="seconds before a call counts as lost")
    p.add_argument("--execution-ids", action="store_true",
                   help="every create carries its own executionId (as the Python SDK's calls do)")


def options_from(a: argparse.Namespace) -> Options:
    return Options(workers=a.workers, claim_batch=a.claim_batch, status_batch=a.status_batch,
                   status_pollers=a.status_pollers, connections=a.connections,
                   result_connections=a.result_connections, deadline_s=a.deadline, client=a.client,
                   execution_ids=a.execution_ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--secret", required=True, help="cluster API secret")
    p.add_argument("--cp-pid", type=int, help="control-plane root pid to sample (default: whoever listens)")
    p.add_argument("kind", choices=["sequential", "burst", "steady"])
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--duration", type=float, default=60)
    add_options(p)
    a = p.parse_args()
    pid = a.cp_pid
    if pid is None:
        port = httpx.URL(a.endpoint).port
        pid = find_listener_pid(port) if port else None
    out = asyncio.run(scenario(a.endpoint, a.secret, a.kind, options_from(a), calls=a.calls, rate=a.rate,
                               duration=a.duration, cp_pid=pid))
    json.dump(out.summary(), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
