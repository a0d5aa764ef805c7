"""Calling remote functions: `Differential` (blocking) and `AsyncDifferential` (asyncio).

A call is `POST /jobs` then waiting for the job. Waiting goes through one result poller per
instance that batches every outstanding job id into `POST /batch-jobs-status-request` long polls
(the server answers as soon as any of them finishes). The poller never dies of a network error or
a control-plane restart: it backs off (capped, jittered) and polls again.

Job creation is retried on network errors and 5xx too. That is safe because every call carries an
`executionId` (the caller's, or a random one): the control-plane uses it as the job id, so a retried
create that had in fact succeeded returns the same job instead of running the function twice.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import itertools
import logging
import math
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple
from urllib.parse import quote

from . import retry
from .controls import Backoff, due_fields
from .errors import (
    CallTimeoutError,
    ControlPlaneError,
    DeadlineExceededError,
    DifferentialError,
    JobCancelledError,
    JobFailedError,
)
from .serialize import deserialize_error, pack_args, unpack
from .transport import LONG_POLL_MS, AsyncTransport, Config, SyncTransport
from .worker import Service

log = logging.getLogger("differential.client")

TERMINAL = ("success", "failure")
_DEADLINE_CODES = ("QUEUE_DEADLINE", "CALL_DEADLINE")  # the codes of the control-plane's deadline rejections
_BATCH_MAX = 1000  # job ids per batch long poll: the server takes up to 100,000; 1,000 keeps each poll small
_MAX_POLLS = 8  # concurrent batch long polls per instance
_CREATE_RETRY_SECONDS = 60.0  # how long a job creation keeps retrying network errors by default
WARN_UNSERVED_AFTER = 2.0  # seconds a call waits before the SDK asks whether any machine polls its service
_SERVICE_CHECK_EVERY = 30.0  # per service, at most one such question in this long


@dataclass(frozen=True)
class CallOptions:
    """Per-call settings, in seconds where they are times.

    `wait`: how long the caller waits; then CallTimeoutError, and the call goes on without it
    (fetch it later with `result(job_id)`), unless `cancel_on_timeout`, which cancels it.
    `attempt_timeout`: one attempt's limit on the control-plane (`timeoutSeconds`, default 300);
    an attempt that passes it is re-run while `retry_count_on_stall` allows.
    `queue_deadline`: the call fails unless a machine claims it within this.
    `call_deadline`: the whole call, across attempts, fails unless it finishes within this.
    `timeout`: the older all-in-one option, kept as it was for existing code: it is both `wait`
    and `attempt_timeout` (each of those, when given, overrides its half). An attempt that outlives
    it is re-run (up to `retry_count_on_stall` times) even though the caller stopped waiting; a
    function that may run longer than the caller waits wants `wait` (and `attempt_timeout` sized to
    the function), or `call_deadline` to bound the whole call.
    `retry_count_on_stall`: re-runs after a worker died or timed out. `cache_key`/`cache_ttl`:
    reuse a successful result of the same function and key younger than `cache_ttl` seconds.
    `execution_id`: idempotency key (the same id runs the function once). `background`: return
    the job id at once instead of waiting. `retry`, `delay`, `run_at`: see below."""

    timeout: Optional[float] = None
    retry_count_on_stall: int = 3
    predictive_retries: bool = False
    cache_key: Optional[str] = None
    cache_ttl: Optional[float] = None
    execution_id: Optional[str] = None
    background: bool = False
    # Server-side controls: `retry` re-runs a call whose function raised, after a back-off
    # (`Backoff`; None: the function's own default, if its worker declares one); `delay` (seconds)
    # or `run_at` (an aware datetime): the call runs no earlier than that.
    retry: Optional[Backoff] = None
    delay: Optional[float] = None
    run_at: Optional[datetime.datetime] = None
    wait: Optional[float] = None
    attempt_timeout: Optional[float] = None
    cancel_on_timeout: bool = False
    queue_deadline: Optional[float] = None
    call_deadline: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("timeout", "wait", "attempt_timeout", "queue_deadline", "call_deadline"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")

    @property
    def caller_wait(self) -> Optional[float]:
        """How long the caller waits (None: until the call ends)."""
        return self.wait if self.wait is not None else self.timeout

    def merged(self, **changes: Any) -> "CallOptions":
        if "cache" in changes:
            cache = changes.pop("cache")
            if cache is not None:
                changes["cache_key"], changes["cache_ttl"] = cache
        if "retries" in changes:
            changes["retry_count_on_stall"] = changes.pop("retries")
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown call option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @classmethod
    def resolve(cls, options: "Optional[CallOptions]", changes: Mapping[str, Any]) -> "CallOptions":
        """`options` (or the defaults) with the keyword options of one call applied."""
        base = options or cls()
        return base.merged(**changes) if changes else base

    def call_config(self) -> Dict[str, Any]:
        attempt = self.attempt_timeout if self.attempt_timeout is not None else self.timeout
        timeout = 300 if attempt is None else max(1, math.ceil(attempt))
        cfg: Dict[str, Any] = {
            "retryCountOnStall": int(self.retry_count_on_stall),
            "predictiveRetriesOnRejection": bool(self.predictive_retries),
            "timeoutSeconds": timeout,
            "executionId": self.execution_id or uuid.uuid4().hex,
        }
        if self.cache_key is not None:
            if not self.cache_ttl or self.cache_ttl <= 0:
                raise ValueError("cache_key needs a positive cache_ttl (seconds)")
            cfg["cache"] = {"key": str(self.cache_key), "ttlSeconds": max(1, math.ceil(self.cache_ttl))}
        if self.background:
            cfg["background"] = True
        if self.retry is not None:
            if not isinstance(self.retry, Backoff):
                raise TypeError("retry must be a differential.Backoff")
            cfg["retryOnRejection"] = self.retry.wire()
        cfg.update(due_fields(self.delay, self.run_at))
        if self.call_deadline is not None:
            cfg["callDeadlineSeconds"] = self.call_deadline
        if self.queue_deadline is not None:
            cfg["queueDeadlineSeconds"] = self.queue_deadline
        return cfg


@dataclass
class JobStatus:
    """What the control-plane says about a job."""

    id: str
    status: str
    result: Optional[str] = None
    result_type: Optional[str] = None
    service: Optional[str] = None
    state: Optional[str] = None  # the job's own status ("cancelled", ...); `status` is the original's word
    reason: Optional[str] = None  # why it ended without a result of its own

    @classmethod
    def from_row(cls, row: Dict[str, Any], job_id: Optional[str] = None) -> "JobStatus":
        return cls(
            id=str(row.get("id") or job_id), status=str(row.get("status")), result=row.get("result"),
            result_type=row.get("resultType"), service=row.get("service"), state=row.get("state"),
            reason=row.get("reason"),
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL and (self.status == "failure" or self.result_type is not None)

    def outcome(self) -> Any:
        """The function's return value; raises RemoteError if it raised, JobCancelledError if the
        call was cancelled, DeadlineExceededError if a deadline ended it, JobFailedError if the
        control-plane gave up. Only meaningful when `done`."""
        if self.state == "cancelled":
            raise JobCancelledError(self._message(f"job {self.id} was {self.reason or 'cancelled'}"),
                                    job_id=self.id, reason=self.reason)
        if self.state == "failure" and self._packed().get("code") in _DEADLINE_CODES:
            raise DeadlineExceededError(self._message(f"job {self.id}: {self.reason}"), job_id=self.id,
                                        reason=self.reason, kind=self._packed().get("code"))
        if self.status == "failure":
            raise JobFailedError(
                f"job {self.id} did not complete: it stalled too many times or timed out", job_id=self.id
            )
        value = unpack(self.result)
        if self.result_type == "rejection":
            raise deserialize_error(value, job_id=self.id)
        return value

    def _packed(self) -> Dict[str, Any]:
        """The error the control-plane packed as this job's result (cancel, deadline), or {}."""
        try:
            value = unpack(self.result) if self.result else None
        except Exception:  # a result we cannot read: the reason alone still says why
            return {}
        return value if isinstance(value, dict) else {}

    def _message(self, fallback: str) -> str:
        message = self._packed().get("message")
        return message if isinstance(message, str) and message else fallback


def _create_body(service: str, fn: str, args: Tuple[Any, ...], options: CallOptions) -> Dict[str, Any]:
    # Packing first means a value that cannot cross the wire fails before anything is sent.
    return {"service": service, "targetFn": fn, "targetArgs": pack_args(args), "callConfig": options.call_config()}


class _ResultPoller:
    """Batches watched job ids into long polls; lives on one asyncio loop.

    A call still waiting `warn_after` seconds into its wait has its service looked up once
    (`GET /services/:service`, at most once per service every 30 s): if no machine polls it, a
    warning says so. A call that finishes sooner costs no extra request."""

    def __init__(self, transport: AsyncTransport, warn_after: Optional[float] = WARN_UNSERVED_AFTER) -> None:
        self.transport = transport
        self.warn_after = warn_after
        self.service_checked: Dict[str, float] = {}  # service -> when it was last looked up (monotonic)
        self.waiters: Dict[str, List[asyncio.Future]] = {}
        self.uncovered: Set[str] = set()
        self.polls: Set[asyncio.Task] = set()  # the batch long polls in flight
        self.checks: Set[asyncio.Task] = set()  # service look-ups in flight
        self.wake = asyncio.Event()
        self.backoff = retry.Backoff(*retry.RESULT_POLL)
        self.task: Optional[asyncio.Task] = None
        self.closed = False

    async def wait(self, job_id: str, service: Optional[str] = None) -> JobStatus:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiters.setdefault(job_id, []).append(fut)
        self.uncovered.add(job_id)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        check = None
        if service is not None and self.warn_after is not None:
            check = loop.call_later(self.warn_after, self._check_service, service, fut)
        try:
            return await fut
        finally:
            if check is not None:
                check.cancel()
            lst = self.waiters.get(job_id)
            if lst is not None:
                if fut in lst:
                    lst.remove(fut)
                if not lst:
                    del self.waiters[job_id]
                    self.uncovered.discard(job_id)

    async def _run(self) -> None:
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(0.002)  # let a burst of calls land in one batch
            while self.uncovered and len(self.polls) < _MAX_POLLS and not self.closed:
                batch = list(itertools.islice(self.uncovered, _BATCH_MAX))
                self.uncovered.difference_update(batch)
                task = asyncio.ensure_future(self._poll(batch))
                self.polls.add(task)
                task.add_done_callback(self.polls.discard)

    def _check_service(self, service: str, fut: asyncio.Future) -> None:
        now = time.monotonic()
        last = self.service_checked.get(service)
        if fut.done() or self.closed or (last is not None and now - last < _SERVICE_CHECK_EVERY):
            return
        self.service_checked[service] = now
        task = asyncio.ensure_future(self._ask_service(service))
        self.checks.add(task)  # ended with the polls at close()
        task.add_done_callback(self.checks.discard)

    async def _ask_service(self, service: str) -> None:
        try:
            row = await self.transport.request("GET", f"/services/{quote(service, safe='')}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an older control-plane without the route, a blip: say nothing
            log.debug("could not ask whether service %r is served: %r", service, e)
            return
        if isinstance(row, dict) and row.get("liveWorkers") == 0:
            last = row.get("lastPollAt")
            log.warning("no machine is polling service %r (%s): its calls wait until a worker of it starts",
                        service, f"last poll {last}" if last else "it has never been polled")

    def _settle(self, job_id: str, status: Optional[JobStatus], exc: Optional[BaseException] = None) -> None:
        for fut in self.waiters.pop(job_id, []):
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(status)

    async def _poll(self, batch: List[str]) -> None:
        pending = set(batch)  # a set: a poll's answer may settle hundreds of its 1,000 ids
        try:
            rows = await self.transport.request(
                "POST", "/batch-jobs-status-request", json={"jobIds": batch, "ttl": LONG_POLL_MS},
                long_poll_ms=LONG_POLL_MS,
            )
            self.backoff.reset()
            for row in rows or []:
                st = JobStatus.from_row(row)
                if st.done:
                    self._settle(st.id, st)
                    pending.discard(st.id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let the poller die: back off, or fail these calls
            if retry.is_retryable(e):
                await asyncio.sleep(self.backoff.next_delay())
            else:
                for job_id in pending:
                    self._settle(job_id, None, e)
                pending = set()
        finally:
            self.polls.discard(asyncio.current_task())  # before _run looks at the count again
            self.uncovered.update(j for j in pending if j in self.waiters)
            self.wake.set()

    async def close(self) -> None:
        """Fail the waiting calls and end every task of the poller (none is left pending)."""
        self.closed = True
        for job_id in list(self.waiters):
            self._settle(job_id, None, DifferentialError("the Differential instance was closed"))
        tasks = [t for t in (self.task, *self.polls, *self.checks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.close()
        await self.transport.aclose()


class _LoopThread:
    """A private asyncio loop on a daemon thread, for the blocking API's background work."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Any, timeout: Optional[float] = None) -> Any:
        return self.submit(coro).result(timeout)

    async def _end_tasks(self) -> None:
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self.loop.shutdown_asyncgens()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop's tasks, then the loop and its thread (bounded by `timeout`)."""
        if self.loop.is_running():
            try:
                self.run(self._end_tasks(), timeout)
            except Exception as e:  # stopping must not fail; the loop is stopped below regardless
                log.debug("ending the background tasks: %r", e)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()


def _shut_down(bg: _LoopThread, poller: _ResultPoller) -> None:
    """Stop a `Differential`'s result poller and loop thread. Runs from close(), or (through a
    weakref finalizer) when an instance nobody closed is collected or the interpreter exits, so
    that asyncio never finds the poller's tasks pending and destroyed."""
    try:
        bg.run(poller.aclose(), timeout=5)
    except Exception as e:  # closing must not fail: the loop is stopped below regardless
        log.debug("closing the result poller: %r", e)
    bg.stop()


class _RemoteFunction:
    def __init__(self, owner: Any, service: str, name: str, options: CallOptions) -> None:
        self._owner, self._service, self._name, self._options = owner, service, name, options

    def __call__(self, *args: Any) -> Any:
        return self._owner.call(self._service, self._name, *args, options=self._options)

    def with_options(self, **options: Any) -> "_RemoteFunction":
        return _RemoteFunction(self._owner, self._service, self._name, self._options.merged(**options))

    def __repr__(self) -> str:
        return f"<remote function {self._service}.{self._name}>"


class ServiceClient:
    """`d.client("svc").fn(*args)`: attribute access names the remote function."""

    def __init__(self, owner: Any, service: str, options: CallOptions) -> None:
        self._owner, self._service, self._options = owner, service, options

    def __getattr__(self, name: str) -> _RemoteFunction:
        if name.startswith("__"):
            raise AttributeError(name)
        return _RemoteFunction(self._owner, self._service, name, self._options)

    def function(self, name: str) -> _RemoteFunction:
        """For function names that are not Python identifiers."""
        return _RemoteFunction(self._owner, self._service, name, self._options)

    def with_options(self, **options: Any) -> "ServiceClient":
        return ServiceClient(self._owner, self._service, self._options.merged(**options))


class _Caller:
    """What the blocking and the asyncio callers share: configuration, the proxies, and the
    rules of one call (its create body and retry schedule, the wait left, the timeout error)."""

    def __init__(self, api_secret: Optional[str] = None, endpoint: Optional[str] = None,
                 *, deployment_id: Optional[str] = None, machine_id: Optional[str] = None,
                 create_retry_seconds: float = _CREATE_RETRY_SECONDS, allow_insecure: Optional[bool] = None,
                 warn_unserved_after: Optional[float] = WARN_UNSERVED_AFTER) -> None:
        self.config = Config.from_env(api_secret, endpoint, deployment_id, machine_id, allow_insecure)
        self.create_retry_seconds = create_retry_seconds  # job creation retries network errors this long
        self.warn_unserved_after = warn_unserved_after  # None: never ask whether a service is served

    def client(self, service: str, **options: Any) -> ServiceClient:
        """Typed-by-convention proxy: `d.client("svc", timeout=10).fn(1, 2)`."""
        return ServiceClient(self, service, CallOptions().merged(**options))

    def _create_plan(self, service: str, fn: str, args: Tuple[Any, ...],
                     options: Optional[CallOptions]) -> Tuple[Dict[str, Any], Iterator[float]]:
        """The POST /jobs body and the delays between its retries (within the call's timeout)."""
        options = options or CallOptions()
        budget = self.create_retry_seconds
        if options.caller_wait is not None:
            budget = min(options.caller_wait, budget)
        return _create_body(service, fn, args, options), retry.delays(budget, retry.CREATE)

    @staticmethod
    def _remaining(options: CallOptions, started: float) -> Optional[float]:
        wait = options.caller_wait
        return None if wait is None else max(0.0, wait - (time.monotonic() - started))

    @staticmethod
    def _cancel_path(job_id: str) -> str:
        return f"/jobs/{quote(job_id, safe='')}/cancel"

    @staticmethod
    def _cancel_body(reason: Optional[str]) -> Dict[str, Any]:
        return {} if reason is None else {"reason": str(reason)}

    @staticmethod
    def _gave_up_reason(options: CallOptions) -> str:
        return f"the caller stopped waiting after {options.caller_wait:g} s"

    @staticmethod
    def _timeout_error(job_id: str, timeout: Optional[float]) -> CallTimeoutError:
        return CallTimeoutError(
            f"job {job_id} did not finish within {timeout or 0:.1f}s (it may still finish; "
            "fetch it later with result(job_id))", job_id=job_id,
        )

    @staticmethod
    def _status_ttl_ms(wait: float) -> int:
        return int(min(20.0, max(0.0, wait)) * 1000)


class Differential(_Caller):
    """Entry point (blocking API). `api_secret` and `endpoint` default to the environment
    variables DIFFERENTIAL_API_SECRET and DIFFERENTIAL_ENDPOINT; `x-deployment-id` comes from
    DIFFERENTIAL_DEPLOYMENT_ID. One machine id per instance, shared by its calls (each started
    service gets its own). Close it (`close()` or `with`) to stop its services; an instance that
    is never closed still ends its background poller quietly at exit. A call still waiting after
    `warn_unserved_after` seconds (default 2; None: never) asks once whether any machine polls its
    service, and logs a warning on the `differential.client` logger if none does."""

    def __init__(self, api_secret: Optional[str] = None, endpoint: Optional[str] = None,
                 *, deployment_id: Optional[str] = None, machine_id: Optional[str] = None,
                 create_retry_seconds: float = _CREATE_RETRY_SECONDS, allow_insecure: Optional[bool] = None,
                 warn_unserved_after: Optional[float] = WARN_UNSERVED_AFTER) -> None:
        super().__init__(api_secret, endpoint, deployment_id=deployment_id, machine_id=machine_id,
                         create_retry_seconds=create_retry_seconds, allow_insecure=allow_insecure,
                         warn_unserved_after=warn_unserved_after)
        self._http = SyncTransport(self.config)
        self._lock = threading.Lock()
        self._bg: Optional[Tuple[_LoopThread, _ResultPoller]] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._services: List[Service] = []

    # -- services -----------------------------------------------------------------------------

    def service(self, name: str, **worker_options: Any) -> Service:
        """A service to register functions on (`@svc.function` or `svc.register(fn)`)."""
        svc = Service(name, self.config, **worker_options)
        self._services.append(svc)
        return svc

    # -- calls --------------------------------------------------------------------------------

    def _background(self) -> Tuple[_LoopThread, _ResultPoller]:
        with self._lock:
            if self._bg is None:
                bg = _LoopThread(f"differential-results-{self.config.machine_id}")

                async def make() -> _ResultPoller:
                    return _ResultPoller(AsyncTransport(self.config), self.warn_unserved_after)

                poller = bg.run(make())
                self._bg = (bg, poller)
                self._finalizer = weakref.finalize(self, _shut_down, bg, poller)
            return self._bg

    def create_job(self, service: str, fn: str, *args: Any, options: Optional[CallOptions] = None) -> str:
        """POST /jobs (retried on network errors and 5xx; idempotent through executionId)."""
        body, schedule = self._create_plan(service, fn, args, options)
        while True:
            try:
                return str(self._http.request("POST", "/jobs", json=body)["id"])
            except DifferentialError as e:
                delay = retry.next_delay(e, schedule)
                if delay is None:
                    raise
                time.sleep(delay)

    def call(self, service: str, fn: str, *args: Any, options: Optional[CallOptions] = None, **opts: Any) -> Any:
        """Call `service.fn(*args)` and return its result (or the job id for background calls)."""
        options = CallOptions.resolve(options, opts)
        started = time.monotonic()
        job_id = self.create_job(service, fn, *args, options=options)
        if options.background:
            return job_id
        try:
            return self.wait(job_id, timeout=self._remaining(options, started), service=service).outcome()
        except CallTimeoutError:
            if options.cancel_on_timeout:
                try:
                    self.cancel(job_id, reason=self._gave_up_reason(options))
                except DifferentialError as e:  # it finished meanwhile, or the cancel failed: the timeout stands
                    log.info("job %s: cancelling after the caller's timeout: %s", job_id, e)
            raise

    def cancel(self, job_id: str, reason: Optional[str] = None) -> JobStatus:
        """Cancel a call in flight (`POST /jobs/:id/cancel`); returns its status, now cancelled
        (cancelling a cancelled call again is fine). A call that already finished raises
        ControlPlaneError (status 409, code "job_finished"); an unknown one NotFoundError."""
        row = self._http.request("POST", self._cancel_path(job_id), json=self._cancel_body(reason))
        return JobStatus.from_row(row or {}, job_id)

    def wait(self, job_id: str, timeout: Optional[float] = None, service: Optional[str] = None) -> JobStatus:
        """Wait until the job is finished; returns its JobStatus (raises CallTimeoutError).
        With `service` (the one called), a wait past `warn_unserved_after` seconds logs a warning
        on the `differential.client` logger if no machine polls that service."""
        bg, poller = self._background()
        fut = bg.submit(poller.wait(job_id, service))
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise self._timeout_error(job_id, timeout) from None

    def result(self, job_id: str, timeout: Optional[float] = None) -> Any:
        """The result of a (background) job by id: returns the value or raises the remote error."""
        return self.wait(job_id, timeout).outcome()

    def job(self, job_id: str, wait: float = 0.0) -> JobStatus:
        """One status read (`GET /jobs/:id`); the server holds it up to `wait` seconds (0-20)
        while the job is not finished. Raises NotFoundError for unknown ids."""
        ttl = self._status_ttl_ms(wait)
        row = self._http.request("GET", f"/jobs/{quote(job_id, safe='')}", params={"ttl": ttl}, long_poll_ms=ttl)
        return JobStatus.from_row(row or {}, job_id)

    def close(self) -> None:
        """Stop started services and the result poller; release connections."""
        for svc in list(self._services):
            if svc.running:
                svc.stop()
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()  # _shut_down, once
            self._bg = self._finalizer = None
        self._http.close()

    def __enter__(self) -> "Differential":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncDifferential(_Caller):
    """The asyncio caller: `await d.client("svc").fn(*args)`. Use it from one event loop."""

    def __init__(self, api_secret: Optional[str] = None, endpoint: Optional[str] = None,
                 *, deployment_id: Optional[str] = None, machine_id: Optional[str] = None,
                 create_retry_seconds: float = _CREATE_RETRY_SECONDS, allow_insecure: Optional[bool] = None,
                 warn_unserved_after: Optional[float] = WARN_UNSERVED_AFTER) -> None:
        super().__init__(api_secret, endpoint, deployment_id=deployment_id, machine_id=machine_id,
                         create_retry_seconds=create_retry_seconds, allow_insecure=allow_insecure,
                         warn_unserved_after=warn_unserved_after)
        self._http: Optional[AsyncTransport] = None
        self._poller: Optional[_ResultPoller] = None

    def _transport(self) -> Tuple[AsyncTransport, _ResultPoller]:
        if self._http is None or self._poller is None:
            self._http = AsyncTransport(self.config)
            self._poller = _ResultPoller(self._http, self.warn_unserved_after)
        return self._http, self._poller

    async def create_job(self, service: str, fn: str, *args: Any, options: Optional[CallOptions] = None) -> str:
        body, schedule = self._create_plan(service, fn, args, options)
        http, _ = self._transport()
        while True:
            try:
                return str((await http.request("POST", "/jobs", json=body))["id"])
            except DifferentialError as e:
                delay = retry.next_delay(e, schedule)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def call(self, service: str, fn: str, *args: Any, options: Optional[CallOptions] = None, **opts: Any) -> Any:
        options = CallOptions.resolve(options, opts)
        started = time.monotonic()
        job_id = await self.create_job(service, fn, *args, options=options)
        if options.background:
            return job_id
        try:
            return (await self.wait(job_id, timeout=self._remaining(options, started), service=service)).outcome()
        except CallTimeoutError:
            if options.cancel_on_timeout:
                try:
                    await self.cancel(job_id, reason=self._gave_up_reason(options))
                except DifferentialError as e:  # it finished meanwhile, or the cancel failed: the timeout stands
                    log.info("job %s: cancelling after the caller's timeout: %s", job_id, e)
            raise

    async def cancel(self, job_id: str, reason: Optional[str] = None) -> JobStatus:
        """As Differential.cancel."""
        http, _ = self._transport()
        row = await http.request("POST", self._cancel_path(job_id), json=self._cancel_body(reason))
        return JobStatus.from_row(row or {}, job_id)

    async def wait(self, job_id: str, timeout: Optional[float] = None, service: Optional[str] = None) -> JobStatus:
        _, poller = self._transport()
        try:
            return await asyncio.wait_for(poller.wait(job_id, service), timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error(job_id, timeout) from None

    async def result(self, job_id: str, timeout: Optional[float] = None) -> Any:
        return (await self.wait(job_id, timeout)).outcome()

    async def job(self, job_id: str, wait: float = 0.0) -> JobStatus:
        ttl = self._status_ttl_ms(wait)
        http, _ = self._transport()
        row = await http.request("GET", f"/jobs/{quote(job_id, safe='')}", params={"ttl": ttl}, long_poll_ms=ttl)
        return JobStatus.from_row(row or {}, job_id)

    async def aclose(self) -> None:
        if self._poller is not None:
            await self._poller.aclose()
        elif self._http is not None:
            await self._http.aclose()
        self._http = self._poller = None

    async def __aenter__(self) -> "AsyncDifferential":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


__all__ = ["AsyncDifferential", "CallOptions", "Differential", "JobStatus", "ServiceClient", "ControlPlaneError"]
