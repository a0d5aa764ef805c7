"""Exception types. Every error the SDK raises derives from DifferentialError, so callers can
catch one base class; the remote-function error keeps what crossed the wire (name, code, stack)."""
from __future__ import annotations

from typing import Any, Mapping, Optional


class DifferentialError(Exception):
    """Base class of every error raised by this SDK."""

    code: Optional[str] = None

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class SerializationError(DifferentialError, TypeError):
    """A value cannot cross the wire (raised before anything is sent)."""

    code = "INVALID_DATA_TYPE"


class ControlPlaneError(DifferentialError):
    """The control-plane answered with an error status (JSON body `{"error": {...}}`)."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, details: Any = None) -> None:
        super().__init__(f"control-plane answered {status}: {message}", code)
        self.status = status
        self.details = details


class AuthenticationError(ControlPlaneError):
    """401: the API secret (or management secret) was not accepted."""


class NotFoundError(ControlPlaneError):
    """404: no such job, cluster or route."""


class ConnectionFailedError(DifferentialError):
    """The control-plane could not be reached (after retries, where the operation retries)."""

    code = "NETWORK_ERROR"


class CallTimeoutError(DifferentialError, TimeoutError):
    """The caller's deadline passed before the job finished. The job may still complete later:
    its id is kept in `job_id`, so `Differential.result(job_id)` can fetch it."""

    code = "TIMEOUT"

    def __init__(self, message: str, job_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailedError(DifferentialError):
    """The control-plane gave up on the job (status `failure`: stalled or timed out too often)."""

    code = "EXECUTION_DID_NOT_COMPLETE"

    def __init__(self, message: str, job_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobCancelledError(DifferentialError):
    """The call was cancelled (by a caller or an operator) before it finished. `reason` is the
    control-plane's ("cancelled by the caller: ..."). Raised in a function that calls
    `current_job().raise_if_cancelled()` too."""

    code = "CANCELLED"

    def __init__(self, message: str, job_id: Optional[str] = None, reason: Optional[str] = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason


class DeadlineExceededError(JobFailedError, TimeoutError):
    """The control-plane ended the call at one of its deadlines: `kind` is "QUEUE_DEADLINE" (no
    machine claimed it in time; `reason` names the service) or "CALL_DEADLINE" (the whole call,
    across attempts). A JobFailedError, and a TimeoutError as CallTimeoutError is."""

    code = "DEADLINE_EXCEEDED"

    def __init__(self, message: str, job_id: Optional[str] = None, reason: Optional[str] = None,
                 kind: Optional[str] = None) -> None:
        super().__init__(message, job_id=job_id)
        self.reason = reason
        self.kind = kind


class RemoteError(DifferentialError):
    """The remote function raised (Python) or threw (TypeScript). `name`, `message`, `code`,
    `stack` and any other properties (`details`) are those of the original error."""

    def __init__(
        self,
        name: str,
        message: str,
        code: Any = None,
        stack: Optional[str] = None,
        cause: Optional[BaseException] = None,
        details: Optional[Mapping[str, Any]] = None,
        job_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.code = code
        self.stack = stack
        self.details = dict(details or {})
        self.job_id = job_id
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name

    def __repr__(self) -> str:
        return f"RemoteError(name={self.name!r}, message={self.message!r}, code={self.code!r})"
