"""The delay and back-off fields of a call's callConfig (issue 14), from the wire to CallConfig.

The schema checks each field alone; this checks what it cannot: `runAt` is an RFC 3339 date-time
that names its offset (a time without one means a different instant on every machine), no more
than a year ahead, and a call names at most one of `delaySeconds` and `runAt`.
"""
from __future__ import annotations

import datetime as dt
import re
import time

from ..engine import controls
from ..errors import ValidationFailed
from .schemas import MAX_DELAY_SECONDS

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


def from_wire(cfg: dict) -> dict:
    """CallConfig's run_at_ms, delay_ms and retry from a validated callConfig."""
    if "delaySeconds" in cfg and "runAt" in cfg:
        raise _invalid("runAt", "cannot be given with delaySeconds: name one due time")
    out: dict = {"retry": controls.backoff_from_wire(cfg.get("retryOnRejection"))}
    if "delaySeconds" in cfg:
        out["delay_ms"] = round(cfg["delaySeconds"] * 1000)
    if "runAt" in cfg:
        out["run_at_ms"] = run_at_ms(cfg["runAt"])
    return out
