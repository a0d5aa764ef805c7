"""Services and the worker that runs their functions.

The worker is an asyncio loop on its own thread:
  * exactly one `POST /jobs-request` long poll is outstanding whenever the pool has a free slot,
    asking for `limit = free slots` (so the pool is never over-committed); the next poll goes out
    as soon as the previous one answered: no sleeps between polls;
  * when every slot is busy it waits for a slot to free up, and pings the control-plane every
    `ping_interval` seconds meanwhile (any request with x-machine-id is a ping), so a worker busy
    with long jobs is never declared stalled and its jobs are not re-run elsewhere;
  * sync functions run on a thread pool of `concurrency` threads, async functions on the loop;
  * each result is POSTed as soon as its function returns, retried with back-off on network
    errors and 5xx (the control-plane fences duplicates, so a retry is harmless);
  * any error of the control-plane or the network is met with capped, jittered back-off: the
    worker never dies of it;
  * stop(): no new claims (the outstanding poll is cancelled), in-flight jobs finish and report,
    bounded by a timeout;
  * while it runs jobs (only then), it asks every `cancel_check_interval` seconds for their status
    (`POST /batch-jobs-status-request`, ttl 0): a job that ended meanwhile (cancelled, or its call
    deadline passed) is abandoned: no result is posted, its `current_job()` flag is set
    (context.py), an async function's task is cancelled.

stop() cancels the outstanding long poll so that it returns at once (the published SDK waits the
poll out, up to ~22 s). The control-plane cannot see that cancellation: until that poll's ttl runs
out, a job arriving for this service may still be claimed for this (now silent) machine. The
control-plane re-queues such a job when the machine timeout passes (90 s by default). Stopping
never loses a job; in that narrow case it delays one. Each worker has its own machine id, so the
caller side of the same instance keeps no stopped worker "alive".
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import inspect
import logging
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional
from urllib.parse import quote

from . import retry
from .errors import AuthenticationError, ControlPlaneError, DifferentialError, SerializationError
from .controls import Backoff
from .context import JobContext, _enter
from .schema import wire_schema_json
from .serialize import pack, serialize_error, unpack_args
from .transport import LONG_POLL_MS, AsyncTransport, Config, new_machine_id

log = logging.getLogger("differential.worker")

DEFAULT_CONCURRENCY = 10
DEFAULT_PING_INTERVAL = 15.0  # well inside the control-plane's 90 s machine timeout
DEFAULT_RESULT_RETRY_SECONDS = 300.0  # keep trying to report a result for this long
DEFAULT_CANCEL_CHECK_INTERVAL = 2.0  # how often a worker running jobs asks whether they were cancelled
_ENDED = ("success", "failure", "cancelled")  # a status answer's `state` when the job is over
MAX_CLUSTER_CONCURRENCY = 1_000_000  # the control-plane refuses larger limits


def _cluster_limit(value: Optional[int], what: str) -> Optional[int]:
    """A concurrency limit the control-plane enforces across every machine (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CLUSTER_CONCURRENCY:
        raise ValueError(f"{what} must be an integer within 1..{MAX_CLUSTER_CONCURRENCY}")
    return value


class Service:
    """A named set of functions. Define with `@svc.function` or `svc.register(fn)`; run with
    `svc.start()` (background) and `svc.stop()`, or `svc.run()` (blocks until SIGINT/SIGTERM).

    `config` says where the control-plane is and with which secret (`Differential.service`
    passes its own); without one, `start()` reads the environment (`Config.from_env()`).

    `concurrency` is this worker's own pool: how many jobs it runs at once. `cluster_concurrency`
    (and `@svc.function(concurrency=N)` per function) are limits the control-plane enforces at the
    claim across every machine serving the service: sent with each poll, judged against the
    running jobs of all machines."""

    def __init__(
        self,
        name: str,
        config: Optional[Config] = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_ttl_ms: int = LONG_POLL_MS,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        result_retry_seconds: float = DEFAULT_RESULT_RETRY_SECONDS,
        cancel_check_interval: float = DEFAULT_CANCEL_CHECK_INTERVAL,
        cluster_concurrency: Optional[int] = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("a service needs a name")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 5000 <= poll_ttl_ms <= 20000:
            raise ValueError("poll_ttl_ms must be within 5000..20000 (the control-plane's range)")
        self.name = name
        self.config = config
        self.concurrency = concurrency
        self.poll_ttl_ms = poll_ttl_ms
        self.ping_interval = ping_interval
        self.result_retry_seconds = result_retry_seconds
        if cancel_check_interval <= 0:
            raise ValueError("cancel_check_interval must be positive (seconds)")
        self.cancel_check_interval = cancel_check_interval
        self.cluster_concurrency = _cluster_limit(cluster_concurrency, "cluster_concurrency")
        self._functions: Dict[str, Callable[..., Any]] = {}
        self._schemas: Dict[str, str] = {}
        self._limits: Dict[str, int] = {}
        self._retries: Dict[str, Backoff] = {}
        self._thread: Optional[threading.Thread] = None
        self._worker: Optional[_Worker] = None
        self._ready = threading.Event()

    # -- definition ---------------------------------------------------------------------------

    def register(self, fn: Callable[..., Any], name: Optional[str] = None, *,
                 concurrency: Optional[int] = None, retry: Optional[Backoff] = None) -> Callable[..., Any]:
        """Explicit form: `svc.register(fn)` or `svc.register(fn, name="other")`.

        `concurrency`: the most running jobs of this function at once across every machine (the
        control-plane's claim enforces it). `retry`: this function's default back-off for
        rejections (`Backoff`), sent in the service's definition: a call that names no `retry` of
        its own gets it."""
        limit = _cluster_limit(concurrency, "concurrency")
        if retry is not None and not isinstance(retry, Backoff):
            raise TypeError("retry must be a differential.Backoff")
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        fname = name or getattr(fn, "__name__", None)
        if not fname or fname == "<lambda>":
            raise ValueError("give the function a name: register(fn, name=...)")
        if fname in self._functions and self._functions[fname] is not fn:
            raise ValueError(f"function {fname!r} is already registered on service {self.name!r}")
        self._schemas[fname] = wire_schema_json(fn)  # refuses signatures the wire cannot call
        self._functions[fname] = fn
        if limit is None:
            self._limits.pop(fname, None)
        else:
            self._limits[fname] = limit
        if retry is not None:
            self._retries[fname] = retry
        return fn

    def function(self, fn: Optional[Callable[..., Any]] = None, *, name: Optional[str] = None,
                 concurrency: Optional[int] = None, retry: Optional[Backoff] = None) -> Any:
        """Decorator: `@svc.function`, `@svc.function(name="other")`, `@svc.function(concurrency=2)`,
        `@svc.function(retry=Backoff(3))`."""
        if fn is not None:
            return self.register(fn, name, concurrency=concurrency, retry=retry)
        return lambda f: self.register(f, name, concurrency=concurrency, retry=retry)

    @property
    def functions(self) -> Dict[str, Callable[..., Any]]:
        return dict(self._functions)

    def definition(self) -> list:
        """What each poll sends as `functions`: name, JSON Schema string and, when set, the
        function's concurrency limit and back-off default (`retryOnRejection`)."""
        functions = [{"name": n, "schema": self._schemas[n]} for n in self._functions]
        for fn in functions:
            if fn["name"] in self._limits:
                fn["concurrency"] = self._limits[fn["name"]]
            if fn["name"] in self._retries:
                fn["retryOnRejection"] = self._retries[fn["name"]].wire()
        return functions

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def machine_id(self) -> Optional[str]:
        """The x-machine-id of the running (or last) worker."""
        return self._worker.config.machine_id if self._worker else None

    @property
    def stats(self) -> Dict[str, int]:
        w = self._worker
        return dict(w.stats) if w else {}

    def start(self, *, max_idle_cycles: Optional[int] = None) -> "Service":
        """Start polling on a background thread and return at once. `max_idle_cycles`: stop by
        itself after that many consecutive empty polls (used by the Lambda handler)."""
        if self.running:
            return self
        if not self._functions:
            raise DifferentialError(f"service {self.name!r} has no functions")
        if self.config is None:
            self.config = Config.from_env()
        self.config.headers()  # fail now, not in the thread, if there is no secret
        self._ready.clear()
        self._worker = _Worker(
            self.name, self.config, dict(self._functions), self.definition(), self._ready,
            concurrency=self.concurrency, poll_ttl_ms=self.poll_ttl_ms, ping_interval=self.ping_interval,
            result_retry_seconds=self.result_retry_seconds, max_idle_cycles=max_idle_cycles,
            cancel_check_interval=self.cancel_check_interval,
            cluster_concurrency=self.cluster_concurrency,
        )
        self._thread = threading.Thread(
            target=self._worker.thread_main, name=f"differential-worker-{self.name}", daemon=True,
        )
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Graceful stop: no new claims; in-flight jobs finish and report. Returns True when all
        did within `timeout` seconds."""
        w, t = self._worker, self._thread
        if w is None or t is None:
            return True
        w.request_stop(timeout)
        t.join(timeout + 5)
        return not t.is_alive() and w.abandoned == 0

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the worker has stopped (by stop(), idle limit or a signal)."""
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()

    def run(self, stop_timeout: float = 30.0) -> None:
        """Start and block; SIGINT/SIGTERM stop gracefully (call from the main thread)."""
        self.start()
        stop_once = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if not stop_once.is_set():
                stop_once.set()
                log.info("signal %s: stopping service %s", signum, self.name)
                threading.Thread(target=self.stop, args=(stop_timeout,), daemon=True).start()

        previous = {}
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.running:
                self.wait(0.1)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Worker:
    """One started run of a service: its loop, its pool of threads, its own machine id."""

    def __init__(
        self,
        name: str,
        config: Config,
        functions: Mapping[str, Callable[..., Any]],
        definition: List[Dict[str, Any]],
        ready: threading.Event,
        *,
        concurrency: int,
        poll_ttl_ms: int,
        ping_interval: float,
        result_retry_seconds: float,
        max_idle_cycles: Optional[int],
        cancel_check_interval: float = DEFAULT_CANCEL_CHECK_INTERVAL,
        cluster_concurrency: Optional[int] = None,
    ) -> None:
        self.name = name
        self.functions = functions
        self.definition = definition
        self.ready = ready  # set once the loop is bound (start() waits for it)
        self.concurrency = concurrency
        self.poll_ttl_ms = poll_ttl_ms
        self.ping_interval = ping_interval
        self.result_retry_seconds = result_retry_seconds
        self.max_idle_cycles = max_idle_cycles
        self.cluster_concurrency = cluster_concurrency
        # Each started worker has its own machine id (the control-plane fences results by it): if
        # stop() abandons a long poll that the server then answers with a claim nobody reads, that
        # job is re-queued once this id goes silent, even while the instance keeps making calls.
        self.config = dataclasses.replace(config, machine_id=new_machine_id())
        self.stats = {"polls": 0, "claimed": 0, "reported": 0, "report_failures": 0, "poll_errors": 0, "pings": 0,
                      "cancelled": 0}
        self.in_flight: Dict[str, asyncio.Task] = {}
        self.cancel_check_interval = cancel_check_interval
        # Per claim: the job's context and the task running its function (what a cancel stops).
        self.running: Dict[str, "tuple[JobContext, asyncio.Task]"] = {}
        self.orphaned = 0  # pool threads still held by sync functions of abandoned jobs
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"differential-fn-{name}",
        )
        self.stopping = False
        self.claim_seq = 0
        self.abandoned = 0
        self.hard_deadline: Optional[float] = None
        # Bound to the worker's loop by _bind_loop() (asyncio objects must be made on their loop
        # on Python 3.9); None until then.
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.stop_event: Optional[asyncio.Event] = None
        self.slot_freed: Optional[asyncio.Event] = None
        self.job_started: Optional[asyncio.Event] = None
        self.http: Optional[AsyncTransport] = None
        self.poll_task: Optional[asyncio.Task] = None

    # Runs on the worker thread.
    def thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        finally:
            self.executor.shutdown(wait=False)
            loop.close()

    def _bind_loop(self) -> None:
        """Create what belongs to the running loop, then publish the loop (request_stop uses it)."""
        self.stop_event = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.job_started = asyncio.Event()
        self.http = AsyncTransport(self.config)
        self.loop = asyncio.get_running_loop()
        if self.stopping:  # stop was asked before the loop existed
            self._begin_stop()
        self.ready.set()

    async def _main(self) -> None:
        self._bind_loop()
        watcher = asyncio.ensure_future(self._watch_cancellations())
        try:
            await self._poll_loop()
            await self._drain()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await self.http.aclose()

    async def _sleep_unless_stopping(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self.stop_event.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _poll_loop(self) -> None:
        backoff = retry.Backoff(*retry.WORKER_POLL)
        idle = 0
        while not self.stopping:
            free = self.concurrency - len(self.in_flight) - self.orphaned
            if free <= 0:
                # Busy: wait for a slot, pinging so the control-plane knows we are alive.
                self.slot_freed.clear()
                try:
                    await asyncio.wait_for(self.slot_freed.wait(), self.ping_interval)
                except asyncio.TimeoutError:
                    await self._ping()
                continue
            body = {"limit": min(free, 1000), "ttl": self.poll_ttl_ms, "service": self.name,
                    "functions": self.definition}
            if self.cluster_concurrency is not None:
                body["concurrency"] = self.cluster_concurrency
            self.poll_task = asyncio.ensure_future(
                self.http.request("POST", "/jobs-request", json=body, long_poll_ms=self.poll_ttl_ms)
            )
            try:
                jobs = await self.poll_task
            except asyncio.CancelledError:
                if self.stopping:
                    break
                raise
            except Exception as e:
                self.stats["poll_errors"] += 1
                delay = backoff.next_delay()
                if isinstance(e, AuthenticationError):
                    delay = max(delay, 5.0)
                level = logging.WARNING if backoff.attempt <= 3 or backoff.attempt % 20 == 0 else logging.DEBUG
                log.log(level, "service %s: poll failed (%s); retrying in %.1fs", self.name, e, delay)
                await self._sleep_unless_stopping(delay)
                continue
            finally:
                self.poll_task = None
            backoff.reset()
            self.stats["polls"] += 1
            jobs = jobs if isinstance(jobs, list) else []
            for job in jobs:
                self.stats["claimed"] += 1
                # Keyed per claim, not per job id: after a stall the same job can be claimed again
                # while its first run is still going, and both runs must be waited for.
                self.claim_seq += 1
                key = f"{job.get('id')}#{self.claim_seq}"
                self.in_flight[key] = asyncio.ensure_future(self._run_job(job, key))
            if jobs:
                idle = 0
            else:
                idle += 1
                if self.max_idle_cycles is not None and idle >= self.max_idle_cycles:
                    log.info("service %s: %d empty polls, stopping", self.name, idle)
                    self.stopping = True

    async def _ping(self) -> None:
        try:
            await self.http.request("POST", "/metrics", json={"events": []})
            self.stats["pings"] += 1
        except Exception as e:  # a missed ping is not fatal; the next one may get through
            log.debug("ping failed: %s", e)

    async def _drain(self) -> None:
        """Wait for in-flight jobs (they report their own results), bounded by the stop deadline."""
        while self.in_flight:
            timeout = None if self.hard_deadline is None else self.hard_deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            await asyncio.wait(list(self.in_flight.values()), timeout=timeout)
        self.abandoned = len(self.in_flight)
        tasks = list(self.in_flight.values())
        for task in tasks:
            log.error("service %s: stop timed out; a job is still running and will not be reported "
                      "(the control-plane retries it after its timeout)", self.name)
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _execute(self, fn: Callable[..., Any], args: list, threads: List[concurrent.futures.Future]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        ctx = contextvars.copy_context()
        thread = self.executor.submit(functools.partial(ctx.run, fn, *args))
        threads.append(thread)  # a cancelled job's thread runs on: the pool counts it until it ends
        value = await asyncio.wrap_future(thread)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _watch_cancellations(self) -> None:
        """While jobs run, ask for their status every cancel_check_interval seconds; stop the
        ones that ended (cancelled, a deadline passed, or finished by another machine)."""
        while True:
            if not self.running:
                self.job_started.clear()
                await self.job_started.wait()
            await asyncio.sleep(self.cancel_check_interval)
            ids = sorted({job.job_id for job, _ in self.running.values()})
            if not ids:
                continue
            try:
                rows = await self.http.request("POST", "/batch-jobs-status-request", json={"jobIds": ids, "ttl": 0})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next check asks again
                log.debug("service %s: checking for cancelled jobs failed: %s", self.name, e)
                continue
            ended = {str(r.get("id")): r for r in rows or [] if isinstance(r, dict) and r.get("state") in _ENDED}
            for job, task in list(self.running.values()):
                row = ended.get(job.job_id)
                if row is not None and not job.cancelled:
                    log.info("service %s: job %s %s; abandoning it", self.name, job.job_id,
                             row.get("reason") or f"ended ({row.get('state')})")
                    job.cancel(row.get("reason") or f"ended ({row.get('state')})")
                    task.cancel()

    async def _run_job(self, job: Dict[str, Any], key: str) -> None:
        job_id = str(job.get("id"))
        target = str(job.get("targetFn"))
        started = time.monotonic()
        context = JobContext(job_id, self.name, target)
        _enter(context)  # this task's own context: the function's (and its thread's) current_job()
        threads: List[concurrent.futures.Future] = []
        try:
            fn = self.functions.get(target)
            try:
                if fn is None:
                    raise DifferentialError(f"Function was not registered. name='{target}'", code="FUNCTION_NOT_FOUND")
                execution = asyncio.ensure_future(self._execute(fn, unpack_args(job.get("targetArgs")), threads))
                self.running[key] = (context, execution)
                self.job_started.set()
                try:
                    value = await execution
                finally:
                    self.running.pop(key, None)
                try:
                    result, result_type = pack(value, "return value"), "resolution"
                except SerializationError as e:
                    raise SerializationError(f"{self.name}.{target}: {e}") from None
            except asyncio.CancelledError:
                if context.cancelled:
                    return  # the job ended elsewhere: nothing to report
                raise
            except BaseException as e:  # noqa: B902 - anything the function raises is its result
                result, result_type = pack(serialize_error(e)), "rejection"
            if context.cancelled:  # it returned (or raised) after all: the control-plane would fence it
                return
            elapsed_ms = int((time.monotonic() - started) * 1000)
            await self._report(job_id, result, result_type, elapsed_ms)
        finally:
            if context.cancelled:
                self.stats["cancelled"] += 1
                self._hold_thread(threads)
            self.in_flight.pop(key, None)
            self.slot_freed.set()

    def _hold_thread(self, threads: List[concurrent.futures.Future]) -> None:
        """Count an abandoned sync function's thread as busy until the function returns."""
        loop = self.loop
        for thread in threads:
            if thread.done():
                continue
            self.orphaned += 1

            def release(_: Any) -> None:
                def on_loop() -> None:
                    self.orphaned -= 1
                    self.slot_freed.set()
                try:
                    loop.call_soon_threadsafe(on_loop)
                except RuntimeError:  # the loop is closed: the worker is gone
                    pass

            thread.add_done_callback(release)

    async def _report(self, job_id: str, result: str, result_type: str, elapsed_ms: int) -> None:
        body = {"result": result, "resultType": result_type, "functionExecutionTime": elapsed_ms}
        backoff = retry.Backoff(*retry.REPORT)
        deadline = time.monotonic() + self.result_retry_seconds
        while True:
            try:
                await self.http.request("POST", f"/jobs/{quote(job_id, safe='')}/result", json=body)
                self.stats["reported"] += 1
                return
            except Exception as e:
                if isinstance(e, ControlPlaneError) and e.status == 413 and result_type == "resolution":
                    err = DifferentialError(f"the result of job {job_id} is too large for the control-plane", code="RESULT_TOO_LARGE")
                    body = {"result": pack(serialize_error(err)), "resultType": "rejection", "functionExecutionTime": elapsed_ms}
                    result_type = "rejection"
                    continue
                delay = backoff.next_delay()
                now = time.monotonic()
                out_of_time = now + delay > deadline or (self.hard_deadline is not None and now + delay > self.hard_deadline)
                if not retry.is_retryable(e) or out_of_time:
                    self.stats["report_failures"] += 1
                    log.error("job %s: could not report its result: %s", job_id, e)
                    return
                log.warning("job %s: reporting the result failed (%s); retrying in %.1fs", job_id, e, delay)
                await asyncio.sleep(delay)

    # Called from any thread: the stop itself happens on the worker's loop.
    def request_stop(self, timeout: float) -> None:
        self.hard_deadline = time.monotonic() + timeout
        self.stopping = True
        loop = self.loop
        if loop is None:  # not bound yet: _bind_loop() sees `stopping`
            return
        try:
            loop.call_soon_threadsafe(self._begin_stop)
        except RuntimeError:  # loop already closed: the worker had stopped by itself
            pass

    def _begin_stop(self) -> None:
        self.stopping = True
        self.stop_event.set()
        self.slot_freed.set()
        if self.poll_task is not None:
            self.poll_task.cancel()
