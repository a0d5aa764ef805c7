"""A deployment's log lines from CloudWatch Logs (`/aws/lambda/<function>`), one page at a time.

FilterLogEvents with the caller's filterPattern and `next` token; the Lambda runtime's own lines
(START, END, REPORT, INIT_START, "Task timed out") are dropped and trailing newlines stripped.
A log group that does not exist yet (the function never ran) is an empty page, not an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..settings import Settings
from . import aws

MAX_LIMIT = 1000  # FilterLogEvents' own maximum
_NOISE = re.compile(r"^(START|END|REPORT|INIT_START|INIT_REPORT|EXTENSION|TELEMETRY) |Task timed out after")


def group_name(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def is_noise(message: str) -> bool:
    return bool(_NOISE.search(message))


@dataclass(frozen=True)
class Page:
    events: list[dict]
    next: str | None


def read(settings: Settings, function_name: str, *, start_ms: int, end_ms: int, pattern: str | None = None,
         next_token: str | None = None, limit: int = 100) -> Page:
    arguments = {"logGroupName": group_name(function_name), "startTime": start_ms, "endTime": end_ms,
                 "limit": max(1, min(limit, MAX_LIMIT))}
    if pattern:
        arguments["filterPattern"] = pattern
    if next_token:
        arguments["nextToken"] = next_token
    try:
        answer = aws.client("logs", settings).filter_log_events(**arguments)
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == "ResourceNotFoundException":
            return Page([], None)
        raise
    events = []
    for event in answer.get("events", []):
        message = str(event.get("message", "")).rstrip("\r\n")
        if not is_noise(message):
            events.append({"timestamp": int(event.get("timestamp", 0)), "message": message})
    return Page(events, answer.get("nextToken") or None)
