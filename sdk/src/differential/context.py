"""The job a function is running for: `current_job()`, and its cooperative cancellation flag.

A worker asks the control-plane every couple of seconds for the status of the jobs it runs; when
one was cancelled (or its call deadline ended it), the worker stops waiting for the function, posts
no result, and sets this flag. An async function also has its task cancelled. A sync function
cannot be interrupted from outside: it reads the flag (`cancelled`, `raise_if_cancelled()`, or
sleeps with `wait()`), and until it returns, its thread stays taken (the worker counts it as busy).
"""
from __future__ import annotations

import contextvars
import threading
from typing import Optional

from .errors import JobCancelledError


class JobContext:
    """What a running function may know about its job."""

    def __init__(self, job_id: str, service: str, function: str) -> None:
        self.job_id = job_id
        self.service = service
        self.function = function
        self.reason: Optional[str] = None
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once the control-plane said the call no longer wants this run's result."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelledError if the job was cancelled: the cooperative way out of a loop."""
        if self.cancelled:
            raise JobCancelledError(f"job {self.job_id} was {self.reason or 'cancelled'}", job_id=self.job_id,
                                    reason=self.reason)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Sleep up to `timeout` seconds, ending early on cancellation; returns `cancelled`."""
        return self._cancelled.wait(timeout)

    def cancel(self, reason: Optional[str]) -> None:
        """Set the flag (the worker does, from what the control-plane said)."""
        self.reason = reason
        self._cancelled.set()

    def __repr__(self) -> str:
        return f"<job {self.job_id} {self.service}.{self.function}{' cancelled' if self.cancelled else ''}>"


_current: contextvars.ContextVar[Optional[JobContext]] = contextvars.ContextVar("differential_job", default=None)


def current_job() -> Optional[JobContext]:
    """The job the calling function runs for (in a worker, sync or async), else None."""
    return _current.get()


def _enter(job: JobContext) -> contextvars.Token:
    return _current.set(job)
