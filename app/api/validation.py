"""A small JSON Schema validator for the subset our request schemas use.

The same schema dicts validate requests and are published in /openapi.json, so the description
can never drift from what is enforced. Errors name the field path and what was expected. A valid
value gets the schema's `"default"`s filled in, so a view reads `body["limit"]` and the default
it gets is the one the document publishes.
"""
from __future__ import annotations

import copy
import math
from typing import Any

from ..errors import ValidationFailed

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(schema: dict, value: Any, path: str = "") -> list[dict]:
    """Every problem of value against schema, as [{"field", "message"}]."""
    where = path or "(body)"
    expected = schema.get("type")
    if expected is not None:
        allowed = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES[t](value) for t in allowed):
            return [{"field": where, "message": f"must be of type {' or '.join(allowed)}"}]
    problems: list[dict] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append({"field": where, "message": f"must be one of {', '.join(map(str, schema['enum']))}"})
    if isinstance(value, str):
        if not storable_text(value):
            problems.append({"field": where, "message": "must not contain NUL characters or unpaired surrogates"})
        if len(value) < schema.get("minLength", 0):
            problems.append({"field": where, "message": f"must be at least {schema['minLength']} characters"})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append({"field": where, "message": f"must be at most {schema['maxLength']} characters"})
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append({"field": where, "message": f"must be at least {schema['minimum']}"})
        if "maximum" in schema and value > schema["maximum"]:
            problems.append({"field": where, "message": f"must be at most {schema['maximum']}"})
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append({"field": where, "message": f"must have at least {schema['minItems']} items"})
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append({"field": where, "message": f"must have at most {schema['maxItems']} items"})
        if "items" in schema and not _plain_strings(schema["items"], value):
            for i, item in enumerate(value):
                problems += errors(schema["items"], item, f"{path}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append({"field": _join(path, name), "message": "is required"})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                problems += errors(props[name], item, _join(path, name))
            elif extra is False:
                problems.append({"field": _join(path, name), "message": "is not a known field"})
            elif isinstance(extra, dict):
                problems += errors(extra, item, _join(path, name))
    return problems


_PLAIN_STRING_KEYS = frozenset({"type", "minLength", "maxLength", "description"})


def _plain_strings(item_schema: dict, value: list) -> bool:
    """True when every item is a valid string of a schema that checks only type and length.

    The published SDK sends every outstanding call's id in one status poll, thousands of them, many
    times a second; checking them one by one cost milliseconds per poll. This checks the whole list
    with builtins, and anything it cannot vouch for goes through the item-by-item path (which also
    names the bad item)."""
    if item_schema.get("type") != "string" or not item_schema.keys() <= _PLAIN_STRING_KEYS or not value:
        return False
    if not all(type(v) is str for v in value):
        return False
    lengths = list(map(len, value))
    if min(lengths) < item_schema.get("minLength", 0) or max(lengths) > item_schema.get("maxLength", math.inf):
        return False
    return storable_text("".join(value))  # Python never pairs surrogates across the join


def storable_text(value: str) -> bool:
    """PostgreSQL text holds neither NUL nor unpaired surrogates (not UTF-8): such input is a 400, not a 500."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(schema: dict, value: Any, what: str = "request body") -> Any:
    """value with its defaults filled in (in place), or ValidationFailed naming every problem."""
    problems = errors(schema, value)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationFailed(f"invalid {what}: {first['field']} {first['message']}{more}", {"fields": problems})
    fill_defaults(schema, value)
    return value


def fill_defaults(schema: dict, value: Any) -> None:
    """Give each absent property that declares a `"default"` a copy of it, at every depth.

    An absent object gets its properties' defaults only if the object itself declares a default
    (`"default": {}`): then it is filled in, and so are its own defaults. Call on a valid value."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                default = prop["default"]
                value[name] = copy.deepcopy(default) if isinstance(default, (dict, list)) else default
            if name in value and _has_defaults(prop):
                fill_defaults(prop, value[name])
    elif isinstance(value, list) and "items" in schema and _has_defaults(schema["items"]):
        for item in value:
            fill_defaults(schema["items"], item)


def _has_defaults(schema: dict) -> bool:
    """Whether anything below schema declares a default (a big id list is not walked for nothing).

    Asked on every request, of schemas that live as long as the process: remembered by identity
    (the entry holds the schema, so its id is never reused for another)."""
    entry = _HAS_DEFAULTS.get(id(schema))
    if entry is None:
        known = any("default" in prop or _has_defaults(prop) for prop in schema.get("properties", {}).values()) or (
            "items" in schema and _has_defaults(schema["items"]))
        entry = _HAS_DEFAULTS[id(schema)] = (schema, known)
    return entry[1]


_HAS_DEFAULTS: dict[int, tuple[dict, bool]] = {}


def coerce_query(schema: dict, args: dict[str, str]) -> dict:
    """Query strings arrive as text: convert declared integers before validating (and filling defaults)."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name, raw in args.items():
        kind = props.get(name, {}).get("type")
        if kind == "integer":
            try:
                out[name] = int(raw)
            except ValueError:
                raise ValidationFailed(f"invalid query: {name} must be a whole number",
                                       {"fields": [{"field": name, "message": "must be a whole number"}]}) from None
        else:
            out[name] = raw
    return validate(schema, out, "query")
