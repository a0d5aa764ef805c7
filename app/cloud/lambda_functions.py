"""The deployed service's Lambda function: wake it up (an asynchronous invoke), describe it.

An invoke with InvocationType=Event returns at once (202) and runs the function once; the
function's SDK long-polls the control-plane for the waiting calls and stops when idle. The
template sets MaximumRetryAttempts 0, so a failed wake-up is retried by the leader, never by Lambda.
"""
from __future__ import annotations

from ..settings import Settings
from . import aws


def wake(settings: Settings, function_name: str) -> int:
    """Invoke the function asynchronously with an empty event; the HTTP status (202)."""
    answer = aws.client("lambda", settings).invoke(FunctionName=function_name, InvocationType="Event",
                                                   Payload=b"{}")
    return int(answer.get("StatusCode", 0))


def describe(settings: Settings, function_name: str) -> dict | None:
    """GetFunction's Configuration, or None when the function does not exist."""
    try:
        return aws.client("lambda", settings).get_function(FunctionName=function_name)["Configuration"]
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
