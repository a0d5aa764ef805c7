"""What the access-point and settings forms share: a refusal as field problems shown on the page,
form text as the JSON the API's schema validates, and this control-plane's URL for copyable lines.

A form is checked by the same schema and engine checks as its API route (api/schemas.py,
api/validation.py, the engine's own), so the console and the API accept and refuse the same values.
"""
from __future__ import annotations

import re

from flask import request

from ..errors import ValidationFailed
from .security import over_https

_INTEGER = re.compile(r"^[+-]?[0-9]{1,30}$")  # longer is no integer the API takes: left as text, refused


def problems(exc: ValidationFailed) -> list[dict]:
    """[{"field", "message"}] of a refusal (its message alone when it names no field)."""
    fields = (exc.details or {}).get("fields") if isinstance(exc.details, dict) else None
    return list(fields) if fields else [{"field": "", "message": exc.message}]


def boolean(value: str):
    """A form's "true"/"false" as a JSON boolean; anything else stays text, for the schema to refuse."""
    return {"true": True, "false": False}.get(value, value)


def integer(value: str):
    """A form's digits as a JSON integer; anything else stays text, for the schema to refuse."""
    return int(value) if _INTEGER.match(value) else value


def base_url() -> str:
    """This control-plane as the browser reached it (https when a proxy says so): for curl and SDK lines."""
    return ("https" if over_https() else request.scheme) + "://" + request.host
