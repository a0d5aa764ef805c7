"""Differential for Python: durable remote function calls through a Differential control-plane.

    from differential import Differential
    d = Differential("sk_...", endpoint="http://127.0.0.1:4000")
    svc = d.service("greeter")

    @svc.function
    def greet(name: str) -> str:
        return f"Hello, {name}!"

    svc.start()
    d.client("greeter").greet("Ada")   # -> "Hello, Ada!"
"""
from .controls import Backoff
from .client import AsyncDifferential, CallOptions, Differential, JobStatus, ServiceClient
from .errors import (
    AuthenticationError,
    CallTimeoutError,
    ConnectionFailedError,
    ControlPlaneError,
    DeadlineExceededError,
    DifferentialError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
    RemoteError,
    SerializationError,
)
from .context import JobContext, current_job
from .worker import Service

__version__ = "0.1.0"

__all__ = [
    "AsyncDifferential", "AuthenticationError", "Backoff", "CallOptions", "CallTimeoutError", "ConnectionFailedError",
    "ControlPlaneError", "DeadlineExceededError", "Differential", "DifferentialError", "JobCancelledError",
    "JobContext", "JobFailedError", "JobStatus", "NotFoundError", "RemoteError", "SerializationError", "Service",
    "ServiceClient", "current_job",
]
