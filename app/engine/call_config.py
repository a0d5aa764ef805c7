"""A call's `callConfig`, from its wire form (POST /jobs, or a schedule's stored one) to CallConfig.

The one home of that mapping. The schema checks each field alone (and fills in the defaults of
POST /jobs; a stored schedule's may lack them, so absent fields take CallConfig's own); this checks
what it cannot: `runAt` is an RFC 3339 date-time that names its offset (a time without one means a
different instant on every machine), no more than a year ahead, and a call names at most one of
`delaySeconds` and `runAt`.
"""
from __future__ import annotations

import datetime as dt
import re
import time

from ..errors import ValidationFailed
from . import controls
from .jobs import CallConfig

MAX_DELAY_SECONDS = 366 * 86400  # the furthest ahead a delayed call may be due

# RFC 3339's date-time: a date, "T" (or a space), a time with optional fraction, and an offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid request body: callConfig.{field} {message}",
                            {"fields": [{"field": f"callConfig.{field}", "message": message}]})


def run_at_ms(text: str) -> int:
    """An RFC 3339 date-time with an offset, in epoch milliseconds."""
    if not _RFC3339.match(text):
        raise _invalid("runAt", "must be an RFC 3339 date-time with an offset, like 2026-12-01T17:00:00Z")
    # Python takes at most 6 fraction digits; an instant finer than a millisecond is the same job.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("z", "Z").replace("t", "T"))
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid("runAt", "is not a real date and time") from None
    ms = int(when.timestamp() * 1000)
    if ms > time.time() * 1000 + MAX_DELAY_SECONDS * 1000:
        raise _invalid("runAt", f"must be at most {MAX_DELAY_SECONDS // 86400} days ahead")
    return ms


def from_wire(cfg: dict, *, execution_id: str | None = None) -> CallConfig:
    """The engine's CallConfig of a validated callConfig; `execution_id` overrides the wire's."""
    if "delaySeconds" in cfg and "runAt" in cfg:
        raise _invalid("runAt", "cannot be given with delaySeconds: name one due time")
    base = CallConfig()
    cache = cfg.get("cache") or {}
    return CallConfig(
        retry_count_on_stall=cfg.get("retryCountOnStall", base.retry_count_on_stall),
        timeout_seconds=cfg.get("timeoutSeconds", base.timeout_seconds),
        predictive_retries=cfg.get("predictiveRetriesOnRejection", base.predictive_retries),
        execution_id=execution_id or cfg.get("executionId"),
        **({"cache_key": cache["key"], "cache_ttl_seconds": cache["ttlSeconds"]} if cache.get("key") else {}),
        queue_deadline_seconds=cfg.get("queueDeadlineSeconds"),
        call_deadline_seconds=cfg.get("callDeadlineSeconds"),
        retry=controls.backoff_from_wire(cfg.get("retryOnRejection")),
        delay_ms=round(cfg["delaySeconds"] * 1000) if "delaySeconds" in cfg else None,
        run_at_ms=run_at_ms(cfg["runAt"]) if "runAt" in cfg else None,
    )
